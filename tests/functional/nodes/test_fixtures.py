"""The throwaway PostgreSQL and Redis the node tests run against."""

from __future__ import annotations

import psycopg
import redis

from harness.pgredis import PgCluster, RedisServer


def test_postgres_database_per_test(pg_url: str, pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.execute("CREATE TABLE t (x int)")
    assert pg_url.startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/")


def test_redis_keeps_nothing(bus_url: str, redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(bus_url)
    try:
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()

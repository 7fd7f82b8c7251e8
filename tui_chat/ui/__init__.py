"""The Textual front end. It talks to the engine only through its public API."""

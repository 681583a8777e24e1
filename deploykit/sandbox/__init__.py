"""The local ARM emulator: state store (store.py) apart from the HTTPS front (server.py)."""

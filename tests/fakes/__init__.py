"""Fakes of external services that speak their real wire protocol (real sockets, real HTTP)."""

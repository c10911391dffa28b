"""Policies: the Policy protocol, the local and server policies, adapters, the embedded model."""

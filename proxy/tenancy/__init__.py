"""Tenants: who may see what (tokens, tenant config, callers, project ownership)."""

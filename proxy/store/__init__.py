"""The Redis adapter: key names, Lua scripts and the store that runs them."""

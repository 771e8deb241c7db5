"""The Layers API adapter: one GET, classified into an outcome the poller acts on."""

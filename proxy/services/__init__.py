"""Services: the L1 cache, the poll scheduler, interest tracking and the fan-in of snapshots."""

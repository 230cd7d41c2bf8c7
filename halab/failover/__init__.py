"""Faults and what they cost: the catalogue of scenarios with their injections and
observers (catalogue), the clients that probe every VIP and the workloads that prove
no acknowledged write is lost (probe, workloads), each run's timeline from the
cluster's own records (timeline), what a run measured (result), the report (report)
and the corosync token soak (soak). Built on the cluster and lab layers; only the CLI
sits above it."""

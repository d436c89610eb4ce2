"""Scale a run out over several processes and machines, coordinated by Redis (``--redis``).

Nothing here is imported unless ``--redis`` is given: ``redis`` is an optional extra
(``pip install "replicate-batch-engine[redis]"``).

- `_keys`: where everything lives in Redis (one prefix per run, one per account).
- `_schedule`: the shared rate schedule (`RedisBudget`) and the cluster-wide poll pacer.
- `_fence`: fenced job state (owner + epoch, compare-and-set in Lua), `FencedJournal`.
- `_queue`: the shared queue (a Streams consumer group), leases, claims, acks.
- `_worker`: the worker loop; `_submit`: enqueue a manifest, status, journal export.
- `_args`: the CLI flags (imports no redis); `_cli`: the commands that use Redis.
"""

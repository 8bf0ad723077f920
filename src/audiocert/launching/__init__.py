"""Fanning shards out through submitit (slurm | local | debug) and finalising configs when they are done.

A sweep runs in two steps, so that nothing starts before every config has been checked:
1. ``plan_config`` (planning; one Hydra job per config): prepare data, check the config, load the checkpoint
   (weights_only) and every certified example, write plan.json, list the pending shards. Any error fails the
   Hydra run before a single shard runs or is submitted.
2. ``finish_sweep`` (sweep; after Hydra returns, ``FinalizeSweep`` collects the jobs' results through Hydra's
   callback API) hands the pending shards to the launcher:
   - slurm (slurm, slurm_submission): job arrays (split to stay under MaxArraySize, with array parallelism), then
     a reducer job per config that depends on them (afterok);
   - local (executors): pending shards of every config are pooled and run by ``launcher.workers`` processes of
     submitit's LocalExecutor, then reduced here;
   - debug (executors): submitit's DebugExecutor, in this process, then reduced.
   It returns one outcome per config; ``audiocert certify`` exits non-zero when any config is not certified.
Shards already done (their counts file validates) are never submitted again, so rerunning a sweep resumes it.

The shard tasks run ``worker.ShardWorker``; ``scheduling`` sizes them (pure functions). Import the submodules
directly: this package's __init__ imports nothing, so a task unpickling its worker loads only what it needs.
"""

"""The ground every stage stands on: the validated config (`config`, one pydantic object passed
down; its sections in `config_sections`), the exchange-calendar clock (`calendar`), local and
gs:// storage with atomic writes (`storage`), the run context that marks a run RUNNING /
FINISHED / FAILED (`run`), how a run ended as readers see it and what an unfinished one leaves
(`run_status`), one live run per run id (`run_lock`), Ray start-up and the memory estimates
(`resources`), the memory sampler and stop rule over every node (`memory_sampler`,
`node_memory`), signals (`interrupt`), a full disk in one line (`disk_full`), config input and
messages of bounded size (`bounded`), console output and progress bars (`console`,
`progress`), MLflow logging (`tracking`) and Ray task errors (`remote_error`).

The bottom layer: it imports no other `vpt_ray` package (`lint-imports` checks it), so a stage
can use any of it and none of it knows about stages.
"""

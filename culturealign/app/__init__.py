"""The application layer: the only code that sees Hydra and `DictConfig`.

`schema` registers the spec dataclasses with Hydra and turns a composed config into a validated
`JobSpec`; `cli` is the entry point; `callbacks` drives a sweep's parent run, dry-run totals and the
end-of-sweep report; `record` writes a job's results through `culturealign.tracking`.
"""

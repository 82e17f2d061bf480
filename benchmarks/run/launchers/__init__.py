"""Where runs execute. `local` (the default) trains in this process: `benchmarks.run.runner.run_plans`. `ray` submits
each pending run, or packed group of runs, as one task to a Ray cluster: `benchmarks.run.launchers.ray_launcher`
(Ray is imported there only, so the local launcher needs no Ray installed or running). `--jobs N` runs N local
launchers side by side on one machine: `benchmarks.run.launchers.jobs`."""

LAUNCHERS = ("local", "ray")

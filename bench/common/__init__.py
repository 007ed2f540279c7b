"""What every benchmark shares, one concern a module.

paths      the repository and the results folder
errors     BenchError, carrying the end of a process's log
servers    servers as real processes: modelyard services (start_service) and bench programs
children   child processes that speak JSON lines (the load generator, fake workers)
load       the one load generator (`python -m bench.common.load SPEC`) and its drivers
cpu        CPU accounting: processes, the machine, windows
memory     resident memory of process sets, sampled
metrics    a worker's Prometheus /metrics, read
quiet      measuring when the machine is calm, repeating a disturbed measurement
stats      percentiles, medians over rounds, alternating rounds
profiling  py-spy recordings and their folded stacks
results    the JSON lines printed and the results file written
"""

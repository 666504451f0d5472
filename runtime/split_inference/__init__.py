"""Split (edge/cloud) inference runtime: runs what `planner emit` wrote for a split-inference plan.

artifact.py (load and check the emitted halves), wire.py (frame format), transport.py (gRPC stream,
reconnect and resend), pipeline.py (the edge's pipelined request loop, emulation), adaptation.py (link
measurement and plan-table switching), semantic_cache.py (COACH's label-centre cache), receipt.py
(measured vs predicted), run.py (the cloud / edge / both-local entry points).
"""

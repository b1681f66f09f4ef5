"""Online alignment: the policy samples, rewards score, and the policy updates — one loop.

`loop.py` is the loop (sample -> score -> advantages -> update); `algorithm.py` is the
contract each algorithm (`algorithms/`: GRPO, RLOO, PPO, online DPO) fills in.
"""

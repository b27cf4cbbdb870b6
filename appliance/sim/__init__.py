"""The synthetic world: two cameras' worth of places, people and light, with the truth of every frame.

It stands in for cameras where there are none (here, in CI, on a desktop demo): scenarios render
frame by frame like a camera, and random snapshots make training and held-out sets.
"""

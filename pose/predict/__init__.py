"""Inference on images: ``single_person`` (hourglass on MPII crops) and ``multi_person`` (OpenPose).

Import the sub-module you need; nothing is imported here so that one family does not load the other.
"""

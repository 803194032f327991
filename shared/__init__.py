"""Plumbing for the course notebooks: downloads, quick mode, seeding, devices, figures.

Nothing a learner is meant to learn lives here; lessons live in the chapter notebooks.
"""

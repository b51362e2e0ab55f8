"""Runs that tie a scene, its tiles, the models and the writers together for one verb."""

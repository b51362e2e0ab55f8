"""Tests of the multimodal LLM clients, the scripted chat server and the reply parser."""

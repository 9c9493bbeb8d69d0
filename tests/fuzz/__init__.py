"""Fuzzing: the codecs, shared inputs and the regression corpus."""

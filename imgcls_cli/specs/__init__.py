"""Typed, frozen config specs: each config group parsed once at the command edge, with every validation and
every one-line error there, so that the engine reads attributes instead of raw dict look-ups."""

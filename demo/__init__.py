"""``make demo`` / ``python -m demo``: the whole system on one machine.

Starts the analysis server (embedded Redis) and one edge agent that replays sample clips made
at start from the committed LFW test faces, enrols two of the people (one on the watchlist),
prints the dashboard's address and the API key, and stops everything on Ctrl-C.
"""

"""Which preference pairs to train on: selectors registered by name (selectors.py), the margins they read
(scores.py), and `prefalign data select`, which writes the kept rows and a report of why (select.py)."""

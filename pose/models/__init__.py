"""The networks of the model families (one module each). Build them from an ``arch`` dict with
:func:`pose.families.build_model`; what else differs between families lives in :mod:`pose.families`."""

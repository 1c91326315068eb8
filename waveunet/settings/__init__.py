"""Settings: the Hydra config tree composed (:mod:`.compose`: where ``configs/`` lives, composing
a command's config, when two configs mean the same run), the typed schema that checks every
value once (:mod:`.schema`), and Hydra's command-line flags for every ``key=value`` command
(:mod:`.flags`).
"""

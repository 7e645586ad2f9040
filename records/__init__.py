"""Record folders: pack a run into records/<track>/<date>_<name>/, verify one, rank them all.

    python -m records pack --name NAME --author A LOG [LOG ...]   # or --seeds 1337,1338,1339 to run them first
    python -m records verify records/<track>/<date>_<name>
    python -m records leaderboard
    python -m records unpack records/<track>/<date>_<name>/train_gpt.py DIR [--force]
"""

"""Command jobs: a team's own program run by a worker as a supervised child process, its output
kept as the job's log (runner.py has the whole path). Importing this package imports nothing."""

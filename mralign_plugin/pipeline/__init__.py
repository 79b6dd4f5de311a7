"""Pipeline stages that read and write files: generate, label, annotate, fit-transitions, weigh, demo."""

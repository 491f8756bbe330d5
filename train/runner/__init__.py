"""The runner: one run of training in this process (session), its parts built by setup: the options, the run
folder (resume, claim), the training state and its checkpoint, the loop and the components it asks when to act
(log window, divergence, stopping, evaluation, checkpointer; hooks for the tools), W&B tracking and the console."""

"""The runner: one run of training in this process (session), built from small parts: the options, the run
folder (resume, claim), the training state and its checkpoint, the loop, W&B tracking and the console."""

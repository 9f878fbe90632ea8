"""What runs inside a trial, on whatever node Ray places it: the trainable and what it
keeps (checkpoints, the best epoch, the divergence marker), the dataset on the node. A
trial receives nothing from the driver but its searched values and the trial spec.
"""

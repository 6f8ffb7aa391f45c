"""Training: resolving a run, the one fit loop (training and tuning), the callbacks Keras lacks, fine-tuning from a saved model, tuning, tf.distribute."""

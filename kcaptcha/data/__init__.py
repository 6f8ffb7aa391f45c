"""Data: labelled folders, the preprocessing contract, synthetic captchas and their looks, the pool, augmentation, the tf.data pipeline, bin/prepare and bin/collect."""

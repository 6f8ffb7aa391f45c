"""Reading: the runtime that reads captchas with a saved model (`Recognizer`), decoding, reading in warped copies and scoring. Imports no TensorFlow unless a Keras backend is asked for."""

"""kcaptcha: train, test and serve text-CAPTCHA recognisers.

    import kcaptcha
    recognizer = kcaptcha.load_model("digits")
    print(recognizer.predict("captcha.png").text)
"""

__version__ = "0.1.0"

__all__ = ["Config", "Recognizer", "load_model", "__version__"]


def __getattr__(name):
    # Lazy: importing kcaptcha (e.g. in a captcha-generating worker) must not pull in TensorFlow.
    if name == "Config":
        from kcaptcha.config import Config
        return Config
    if name in ("Recognizer", "load_model"):
        from kcaptcha.reading import recognizer
        return getattr(recognizer, name)
    raise AttributeError(f"module 'kcaptcha' has no attribute {name!r}")

from noisyclean.cli import entry

entry()

from noisyclean.cli import app

app(prog_name="noisyclean")

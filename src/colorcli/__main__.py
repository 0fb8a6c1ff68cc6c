from colorcli.cli import app

app(prog_name="colorcli")

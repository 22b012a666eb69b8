"""The toy app of sarge's quickstart: says hello on its homepage.

Configuration comes from the environment (12factor): MESSAGE is what the
homepage says; the port comes from the Procfile's $PORT.
"""

import logging
import os
import sys

from flask import Flask

app = Flask(__name__)


@app.route("/")
def home():
    return os.environ.get("MESSAGE", "hello web!") + "\n"


@app.route("/up")
def up():
    return "ok\n"


if __name__ == "__main__":
    logging.basicConfig()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PORT"])
    app.run(host="127.0.0.1", port=port, threaded=True)

"""Container entry point of the KServe transformer (the class lives in tailsynth.serve.transformer).

In the cluster:  python serving/transformer.py --predictor_host <triton-host:port> --host 0.0.0.0 --http_port 8080
(TAILSYNTH_TOKEN, and TAILSYNTH_ADMIN_TOKEN when --repository_control is given, come from Secrets.)
Locally `tailsynth serve` runs the same code in-process in front of the tritonserver binary from nvidia-pytriton.
"""

import sys

from tailsynth.serve.transformer import main

if __name__ == "__main__":
    sys.exit(main())

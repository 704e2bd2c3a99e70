"""One progress bar for all workers: input bytes (with ETA), documents/s and tokens/s."""

import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_bytes: int | None, done_bytes: int) -> None:
        tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked after this
        # disable=None: silent when stderr is not a terminal (logs, CI); the summary reports the rest.
        self.bar = tqdm(total=total_bytes, initial=done_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="encode", disable=None, dynamic_ncols=True, smoothing=0.05, mininterval=0.5)
        self.documents = self.tokens = 0
        self.start = time.monotonic()

    def update(self, documents: int, tokens: int, nbytes: int) -> None:
        self.documents += documents
        self.tokens += tokens
        s = max(time.monotonic() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.documents / s:,.0f} docs/s, {self.tokens / s:,.0f} tok/s",
                                 refresh=False)
        self.bar.update(nbytes)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def close(self) -> None:
        self.bar.close()

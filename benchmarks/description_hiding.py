"""What hiding a lead's contact details in its description costs (marketplace/contact.py: hide_contact_details, run
once per POST /v1/leads and per inquiry sold), on typical and adversarial descriptions, and whether the cost stays
linear in the text (the schema allows 5,000 characters; 10,000 shows a quadratic term over the constant costs).

    python benchmarks/description_hiding.py [--repeat 7]

Prints, per description, the least CPU time of `--repeat` reads at 5,000 and 10,000 characters and their ratio
(about 2 when linear, about 4 when quadratic). CPU time of this process, so a shared machine weighs less.
"""

from __future__ import annotations

import argparse
import sys
import time

from marketplace.contact import hide_contact_details

OWN_PHONE, OWN_EMAIL = "+972547654321", "dan72@gmail.com"
TYPICAL = "Need a plumber for a leaking pipe under the kitchen sink, 2 rooms, budget around 1,500 ILS. After 17:00."
UNITS = {
    "prose": "We renovate a flat of 3 rooms, about 85 sqm, floor 2 of 4; tiles in the kitchen and the bathroom. ",
    "prices and dates": "5,000 ILS on 12.03.2026, 09:00-12:00, 2-3 rooms, 1,500-2,000; ",
    "zeros and spaces": "0 ",
    "zeros and underscores": "0_",
    "zero groups": "000_",
    "phone-like groups": "0521234_",
    "en dashes": "0\u2013",
    "spelled local part": "d a n ",
    "letter o and fives": "o5",
}


def cpu_ms(text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        hide_contact_details(text, "IL", phone=OWN_PHONE, email=OWN_EMAIL)
        best = min(best, time.process_time() - start)
    return best * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"typical ({len(TYPICAL)} characters): {cpu_ms(TYPICAL, args.repeat * 20):.3f} ms CPU")
    print(f"{'description':<24} {'5,000 chars':>12} {'10,000 chars':>13} {'ratio':>6}")
    for name, unit in UNITS.items():
        short = (unit * (5000 // len(unit) + 1))[:5000]
        cpu_ms(short, 1)  # warm
        a, b = cpu_ms(short, args.repeat), cpu_ms(short + short, args.repeat)
        print(f"{name:<24} {a:>9.2f} ms {b:>10.2f} ms {b / a if a else float('nan'):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

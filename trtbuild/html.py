"""The one place for report pages: self-contained HTML (inline CSS, images as data: URIs, no scripts) and
matplotlib charts.

matplotlib draws the charts where it is installed (the CPU side, `make install`); where it is not (the
GPU machine's staged Python) `matplotlib_pyplot()` is None and pages show the same numbers without them.
"""

import base64
import html
import io

from trtbuild.workdir import atomic_path

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:75em}"
         "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
         "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}td.n{text-align:right}"
         ".gate{padding:0.6em 1em;border-radius:4px;font-weight:bold}"
         ".pass{background:#e3f4e1;color:#1d5e1a}.fail{background:#fbe3e1;color:#8a1c12}.none{background:#eee}"
         "tr.bad td{background:#fbe3e1}.bar{height:11px;display:inline-block;vertical-align:middle;"
         "background:#c1554a}.gain{background:#4a9f5a}"
         ".cal{background:#4a7fc1}.ev{background:#e0913a}.hist td{border:none;padding:2px 6px}"
         ".track{width:20em;background:#f2f2f2;display:inline-block}")


def escape(s):
    """Text for HTML content and attribute values."""
    return html.escape(str(s), quote=True)


def page(title, parts, lang="zh"):
    """A whole page: `parts` are HTML fragments in order."""
    head = ['<!DOCTYPE html>', '<html lang="{}"><head><meta charset="utf-8">'.format(lang),
            "<title>{}</title><style>{}</style></head><body>".format(escape(title), STYLE)]
    return "\n".join(head + list(parts) + ["</body></html>"]) + "\n"


def matplotlib_pyplot():
    """pyplot with the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png_data_uri(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def save_png(fig, path, dpi=110):
    """Save a figure to `path` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path

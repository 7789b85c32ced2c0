"""The drawing canvas's toolbar kept off the canvas (Draw & predict): `canvas_toolbar_above()`."""
from __future__ import annotations

import streamlit as st

# streamlit-drawable-canvas 0.13 parks its toolbar, invisible but catching the pointer, over the top ~30 px of the
# canvas's right half until the pointer has hovered there; a stroke begun there (a finger on a touch screen, a pen
# pressed as it arrives) landed on the toolbar and was lost whole. The toolbar lives in the component's shadow root,
# out of reach of the page's CSS, so a script puts one rule there: the toolbar always sits above the canvas, where it
# shows on hover anyway (Draw & predict keeps room for it). Placed whenever the page changes: the canvas mounts anew.
_CANVAS_TOOLBAR_ABOVE = """<script>
(() => {
  if (window.digitLabToolbarAbove) return;
  window.digitLabToolbarAbove = true;
  const rule = ".dc-toolbar, .dc-toolbar:hover, .dc-toolbar:focus-within, .dc-toolbar[data-pinned] " +
               "{ top: -2.9rem !important; }";
  const place = () => document.querySelectorAll("[data-testid=stBidiComponentIsolated]").forEach((host) => {
    const root = host.shadowRoot;
    if (root && !root.querySelector("style[data-toolbar-above]")) {
      const style = document.createElement("style");
      style.dataset.toolbarAbove = "";
      style.textContent = rule;
      root.appendChild(style);
    }
  });
  place();
  new MutationObserver(place).observe(document.body, { childList: true, subtree: true });
  setInterval(place, 500);  // a shadow root attached after its host was inserted
})();
</script>"""


def canvas_toolbar_above() -> None:
    """Keep the drawing canvas's toolbar off the canvas (see _CANVAS_TOOLBAR_ABOVE); drawn in the sidebar, out of the
    page's layout."""
    st.sidebar.html(_CANVAS_TOOLBAR_ABOVE, unsafe_allow_javascript=True)

"""Under the hood: the article's MLP equations beside a from-scratch NumPy version you can step through."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.models.numpy_mlp import NumpyMLP, Stepper
from dashboard import state, widgets

SHOWN_UNITS = [0, 1, 2, 3, 4, 5]
TRAIN_IMAGES = 10_000  # a slice keeps each step instant; the maths is the same on all 55,000
HELD_OUT = 1_000

st.title("Under the hood")
st.markdown("The article's network, 784 → 128 (sigmoid) → 10 (softmax), trained with plain SGD "
            "(η = 0.01, batches of 100), written in NumPy with no autograd. Each equation is one line of "
            "`core/models/numpy_mlp.py`; a test checks the gradients against PyTorch's autograd to 1e-6.")

eq, code = st.columns([1, 1])
with eq:
    st.markdown("**Forward pass** (a⁰ is the image as a 784-vector)")
    st.latex(r"z^{1} = W^{1} a^{0} + b^{1}, \qquad a^{1} = \sigma(z^{1}) = \frac{1}{1 + e^{-z^{1}}}")
    st.latex(r"z^{2} = W^{2} a^{1} + b^{2}, \qquad \hat{y} = \mathrm{softmax}(z^{2})")
    st.latex(r"L = -\log \hat{y}_{y}")  # its own line: after the softmax it overflowed the column at 1366×768
    st.markdown("**Backpropagation** (averaged over the batch)")
    st.latex(r"\delta^{2} = \hat{y} - \mathrm{onehot}(y)")
    st.latex(r"\frac{\partial L}{\partial W^{2}} = \delta^{2} (a^{1})^{\top}, \qquad "
             r"\frac{\partial L}{\partial b^{2}} = \delta^{2}")
    st.latex(r"\delta^{1} = \big((W^{2})^{\top} \delta^{2}\big) \odot \sigma(z^{1})\big(1 - \sigma(z^{1})\big)")
    st.latex(r"\frac{\partial L}{\partial W^{1}} = \delta^{1} (a^{0})^{\top}, \qquad "
             r"\frac{\partial L}{\partial b^{1}} = \delta^{1}")
    st.markdown("**SGD update**")
    st.latex(r"W \leftarrow W - \eta \, \frac{\partial L}{\partial W}, \qquad b \leftarrow b - \eta \, "
             r"\frac{\partial L}{\partial b}")
with code:
    st.markdown("**Two bugs in the article's listing, fixed here**")
    st.markdown("- It used variables it never defined; every quantity above is computed before use.\n"
                "- It compared *probabilities* with labels to get accuracy, which is always 0; accuracy here "
                "is `argmax(ŷ) == y`.")
    lr = st.select_slider("Learning rate η", [0.001, 0.01, 0.1, 0.5, 1.0], value=0.01, key="hood_lr",
                          help="0.01 is the article's; it learns slowly. Try 0.5.")
    reset = st.button("Reset weights", key="hood_reset")


@st.cache_resource(show_spinner=False)
def hood_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    splits = state.dataset_splits(name)
    x = splits.train_x[:TRAIN_IMAGES].reshape(-1, 784).numpy() / 255.0
    vx = splits.val_x[:HELD_OUT].reshape(-1, 784).numpy() / 255.0
    return x, splits.train_y[:TRAIN_IMAGES].numpy(), vx, splits.val_y[:HELD_OUT].numpy()


x, y, vx, vy = hood_data(state.current_dataset())
key = ("hood_stepper", state.current_dataset())
if reset or st.session_state.get("hood_key") != key:
    st.session_state["hood_key"] = key
    st.session_state["hood_stepper"] = Stepper(NumpyMLP(seed=0, lr=lr), x, y, batch_size=100, seed=0)
    st.session_state["hood_start_w1"] = st.session_state["hood_stepper"].model.W1.copy()
stepper: Stepper = st.session_state["hood_stepper"]
stepper.model.lr = lr

b1, b2, b3 = st.columns(3)
if b1.button("Step 1 batch", type="primary", key="hood_step1"):
    stepper.step()
if b2.button("Step 10 batches", key="hood_step10"):
    stepper.run(10)
if b3.button("Step 1 epoch (100 batches)", key="hood_step100"):
    stepper.run(100)

model = stepper.model
history = stepper.history
m1, m2, m3, m4 = st.columns(4)
m1.metric("Steps taken", len(history))
m2.metric("Last batch loss", f"{history[-1].loss:.4f}" if history else "–")
m3.metric("Held-out accuracy", f"{model.accuracy(vx, vy):.2%}", help=f"{HELD_OUT} validation images")
m4.metric("Epoch", stepper.epoch + 1)

if history:
    left, right = st.columns(2)
    fig = go.Figure(go.Scatter(y=[r.loss for r in history], mode="lines", name="batch loss"))
    left.plotly_chart(widgets.layout(fig, "Loss per batch", "step", "cross-entropy"), key="hood_loss")
    norms = go.Figure()
    for layer, color in (("layer1", widgets.PALETTE[0]), ("layer2", widgets.PALETTE[1])):
        norms.add_scatter(y=[r.layer_grad_norms()[layer] for r in history], mode="lines", name=layer,
                          line=dict(color=color))
    right.plotly_chart(widgets.layout(norms, "Gradient norm per layer", "step", "‖∂L/∂θ‖"), key="hood_norms")
    last = history[-1]
    st.caption("Last step: " + ", ".join(f"‖∂L/∂{k}‖ = {v:.4f}" for k, v in last.grad_norms.items())
               + " · update/weight ratio " + ", ".join(f"{k} {v:.1e}" for k, v in last.update_ratios.items()))
else:
    st.info("Press **Step 1 batch** to run one forward pass, one backward pass and one SGD update.")

st.subheader("Hidden units' incoming weights (rows of W¹ as 28×28 images)")
now = model.hidden_unit_images(SHOWN_UNITS)
start = st.session_state["hood_start_w1"][SHOWN_UNITS].reshape(-1, 28, 28)


def to_unit(images: np.ndarray) -> list[np.ndarray]:
    scale = np.abs(images).max() or 1.0
    return [(im / scale + 1) / 2 for im in images]


st.caption("Now (grey = 0, light = positive, dark = negative)")
widgets.image_row(to_unit(now), [f"unit {u}" for u in SHOWN_UNITS], width=96)
st.caption("Change since the start (the same scale for all six)")
widgets.image_row(to_unit(now - start), [f"unit {u}" for u in SHOWN_UNITS], width=96)

"""Home: what Digit Lab does, and a look at the dataset in use.

No plotly here: its 4.7 MB script is the heaviest thing a browser loads, and on a 2-core machine parsing it froze
the first page of a fresh browser for seconds. The class counts sit under each class's samples instead."""
import streamlit as st

from dashboard import state, widgets

st.title("Digit Lab")
st.markdown(
    "Train a digit classifier live — from the article's 784-128-10 MLP to a small ResNet and a tiny ViT — "
    "then **draw** a digit and see what it thinks, **measure** it, **explain** it, and **weigh** a bigger "
    "model's accuracy against its training time, size and data.")

cols = st.columns(6)
cols[0].page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
cols[1].page_link("app_pages/runs.py", label="Compare runs", icon=":material/leaderboard:")
cols[2].page_link("app_pages/predict.py", label="Draw & predict", icon=":material/draw:")
cols[3].page_link("app_pages/evaluate.py", label="Evaluate", icon=":material/fact_check:")
cols[4].page_link("app_pages/explain.py", label="Explain", icon=":material/lightbulb:")
cols[5].page_link("app_pages/under_the_hood.py", label="Under the hood", icon=":material/functions:")

name = state.current_dataset()
splits = state.dataset_splits(name)
info = splits.info
st.subheader(f"The data: {info.title}")
sizes = splits.sizes()
stats = state.dataset_stats(name)
st.html(widgets.figures([("Training images", f"{sizes['train']:,}", None),
                         ("Validation images", f"{sizes['val']:,}", "Fixed: used for curves and early stopping"),
                         ("Test images", f"{sizes['test']:,}", "Used only for final figures"),
                         ("Ink per image", f"{stats['ink_fraction']:.1%}", "Share of pixels above half intensity")]))

st.markdown(f"Mean pixel value **{stats['mean']:.4f}**, standard deviation **{stats['std']:.4f}** "
            f"(the model normalises with these). Each image is 28×28 greyscale.")

if st.button("Show other samples", icon=":material/shuffle:"):
    st.session_state["home_seed"] = st.session_state.get("home_seed", 0) + 1
seed = st.session_state.get("home_seed", 0)
tiles = []
for cls in range(len(info.classes)):
    images = splits.samples(cls, 8, seed + 1000 * cls).numpy()
    tiles.append(images.reshape(2, 4, 28, 28).transpose(0, 2, 1, 3).reshape(56, 112))
st.html(widgets.tile_grid(tiles, [f"{title} · {count:,} training images"
                                  for title, count in zip(info.classes, stats["class_counts"])]))

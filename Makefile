# One entry for people and CI. `make test` builds .venv when pyproject.toml changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# torch/torchvision are installed first and pinned: 2.14.1/0.29.1 is the CUDA build
# our machines serve from local disk (it also runs on CPU-only machines).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-slow lint toy camvid-ood road-obstacles bench bench-int8 bench-node demo \
	demo-bag demo-obstacle-bag demo-bundle clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[dev,ros]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --config .hadolint.yaml docker/Dockerfile.runtime docker/Dockerfile.train

toy: $(STAMP)
	$(BIN)/python -m nflowjs.toy2d --out out/toy2d

# CamVid-OOD end to end (README table): three training stages; both checkpoints evaluated on val
# (where the operating points are chosen) and on test, which reports those points' TPR / FPR.
CAMVID ?= ../shared/data/camvid
CAMVID_RUN := runs/camvid-ood
camvid-ood: road-obstacles
	$(BIN)/nflowjs train all --config configs/camvid-ood.yaml --set data.root=$(CAMVID)
	for stage in stage1 stage2; do \
		$(BIN)/nflowjs evaluate --checkpoint $(CAMVID_RUN)/$$stage/last.pt --dataset camvid-ood \
			--root $(CAMVID) --split val --heatmaps 0 --out $(CAMVID_RUN)/val-$$stage && \
		$(BIN)/nflowjs evaluate --checkpoint $(CAMVID_RUN)/$$stage/last.pt --dataset camvid-ood \
			--root $(CAMVID) --out $(CAMVID_RUN)/eval-$$stage \
			--operating-points-from $(CAMVID_RUN)/val-$$stage/results.json && \
		$(BIN)/nflowjs evaluate --checkpoint $(CAMVID_RUN)/$$stage/last.pt \
			--dataset smiyc-obstacle --root $(OBSTACLES) --out $(CAMVID_RUN)/obstacles-$$stage \
			--operating-points-from $(CAMVID_RUN)/val-$$stage/results.json || exit 1; \
	done

# Road obstacles: every CamVid test frame with 1-3 people or cyclists from other test frames
# pasted on its road (SMIYC RoadObstacle layout and labels), for `camvid-ood` and the demo bag.
OBSTACLES := out/camvid-obstacles
road-obstacles: $(STAMP)
	$(BIN)/make_road_obstacles --camvid $(CAMVID) --out $(OBSTACLES)

# CPU latency tables of the README: the CamVid-OOD bundle, and LDN-121 at 2 MP (random weights).
bench: $(STAMP)
	$(BIN)/nflowjs export onnx --checkpoint models/checkpoints/camvid-ood-ldn-effl0-nflowjs.pt \
		--out out/bundles/camvid-ood-360x480 --size 360x480 \
		--threshold-from docs/camvid_ood_nflowjs_val_results.json
	$(BIN)/nflowjs bench --bundle out/bundles/camvid-ood-360x480 --backend onnxruntime torch
	$(BIN)/nflowjs bench --preset ldn121 --size 1024x2048 --backend onnxruntime torch --iterations 10

# INT8 by explicit quantisation (docs/export.md): the CamVid-OOD bundle's Q/DQ graph calibrated on
# 64 train frames; mIoU / AP / FPR95 of both graphs in ONNX Runtime on the test split; CPU latency.
bench-int8: $(STAMP)
	$(BIN)/nflowjs export onnx --checkpoint models/checkpoints/camvid-ood-ldn-effl0-nflowjs.pt \
		--out out/bundles/camvid-ood-360x480 --size 360x480 \
		--threshold-from docs/camvid_ood_nflowjs_val_results.json
	$(BIN)/nflowjs export int8 --bundle out/bundles/camvid-ood-360x480 \
		--calibration-images $(CAMVID)/train/images
	$(BIN)/python -m nflowjs_export.evaluate_bundle --bundle out/bundles/camvid-ood-360x480 \
		--root $(CAMVID) --split test --precision fp32 int8
	$(BIN)/nflowjs bench --bundle out/bundles/camvid-ood-360x480 --backend onnxruntime
	$(BIN)/nflowjs bench --bundle out/bundles/camvid-ood-360x480 --backend onnxruntime \
		--precision int8

# The CamVid-OOD demo bundle the ROS package ships (road.launch.py's default model); tests check
# it still equals this export of the shipped checkpoint.
DEMO_BUNDLE := ros2_ws/src/nflowjs_perception/demo/camvid-ood-360x480
demo-bundle: $(STAMP)
	$(BIN)/nflowjs export onnx --checkpoint models/checkpoints/camvid-ood-ldn-effl0-nflowjs.pt \
		--out $(DEMO_BUNDLE) --size 360x480 --no-torch-model \
		--threshold-from docs/camvid_ood_nflowjs_val_results.json

# The demo bag: 12 CamVid test frames with pedestrians and cyclists (the CamVid-OOD anomalies).
demo-bag: $(STAMP)
	$(BIN)/convert_to_bag camvid --root $(CAMVID) --split test --first-frame 2 --max-frames 12 \
		--out ros2_ws/src/nflowjs_perception/demo/camvid-test-bag --overwrite

# The road-obstacle demo bag: the first 12 frames of the road-obstacle set.
demo-obstacle-bag: road-obstacles
	$(BIN)/convert_to_bag smiyc --root $(OBSTACLES) --max-frames 12 \
		--out ros2_ws/src/nflowjs_perception/demo/camvid-obstacles-bag --overwrite

# The out-of-the-box demo: build the package, run the node over a demo bag, score and draw it.
# DEMO_BAG=camvid-obstacles-bag plays the road-obstacle bag instead of the CamVid test frames.
COLCON_OUT := out/colcon
DEMO_BAG ?= camvid-test-bag
demo: $(STAMP)
	$(BIN)/colcon --log-base $(COLCON_OUT)/log build --base-paths ros2_ws/src \
		--build-base $(COLCON_OUT)/build --install-base $(COLCON_OUT)/install
	$(BIN)/python -m nflowjs_perception.demo --install $(COLCON_OUT)/install \
		--bag ros2_ws/src/nflowjs_perception/demo/$(DEMO_BAG) --out out/demo/$(DEMO_BAG)

# perception_node's own cost per 2 MP frame (docs/ros-node.md table), model outputs precomputed.
bench-node: $(STAMP)
	$(BIN)/python -m nflowjs_perception.node_bench --frames 100

clean:
	rm -rf $(VENV) out .pytest_cache

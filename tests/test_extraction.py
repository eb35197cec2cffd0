"""Tests for medbench_local.metrics.extraction.

The table rows pin down the cascade stage by stage, with emphasis on the
adversarial outputs that make other harnesses mis-score silently; the
Hypothesis properties pin down the invariants every caller relies on.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from medbench_local.metrics.extraction import NO_ANSWER_METHODS, Extraction, extract_choice

RESP = {
    "A": "Community-acquired pneumonia",
    "B": "Acute bronchitis",
    "C": "Pulmonary embolism",
    "D": "Asthma exacerbation",
}
NESTED = {"A": "Pneumonia", "B": "Aspiration pneumonia", "C": "Lung abscess", "D": "Empyema"}
FIVE = {**RESP, "E": "Spontaneous pneumothorax"}
YNM = {"A": "yes", "B": "no", "C": "maybe"}  # PubMedQA's options
VITAMINS = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}  # near-identical texts
LABEL_LIKE = {"A": "Vitamin D. deficiency", "B": "Hyperparathyroidism", "C": "Renal osteodystrophy"}
STROKE = {"A": "Intracerebral hemorrhage", "B": "Cerebral infarction", "C": "Subarachnoid hemorrhage",
          "D": "Transient ischemic attack"}
LISTED = "\n".join(f"{k}. {v}" for k, v in RESP.items())
# Issue 19: option texts where one begins another, and a short common option text.
TB = {"A": "Lung adenocarcinoma", "B": "Sarcoidosis", "C": "Lymphoma", "D": "Tuberculosis"}
ASPIRIN = {"A": "Aspirin", "B": "Aspirin and clopidogrel", "C": "Heparin infusion", "D": "Heparin",
           "E": "Observation"}
B_VITAMINS = {"A": "Vitamin B1", "B": "Vitamin B2", "C": "Folic acid", "D": "Iron"}
ANAPHYLAXIS = {"A": "Give oral diphenhydramine", "B": "Give intravenous methylprednisolone",
               "C": "Give nebulized albuterol only", "D": "Give intramuscular epinephrine"}
LONG_REASONING = "Let us consider the differential carefully. " * 800  # ~35k chars

# (id, text, options, expected letter, expected method)
# fmt: off
CASES: list[tuple[str, str, dict[str, str], str | None, str]] = [
    # ---- stage 1: explicit -------------------------------------------------
    ("answer-is", "The answer is B", RESP, "B", "explicit"),
    ("correct-answer-parens", "The correct answer is (B).", RESP, "B", "explicit"),
    ("answer-colon", "Answer: C", RESP, "C", "explicit"),
    ("answer-dash", "Answer - D", RESP, "D", "explicit"),
    ("correct-option", "Having weighed it all, the correct option is B.", RESP, "B", "explicit"),
    ("i-choose", "I choose B", RESP, "B", "explicit"),
    ("id-go-with", "I'd go with option C here.", RESP, "C", "explicit"),
    ("final-bold", "final answer: **B**", RESP, "B", "explicit"),
    ("bold-label", "**Answer:** D", RESP, "D", "explicit"),
    ("brackets", "The answer is [C]", RESP, "C", "explicit"),
    ("option-is-correct", "Option B is correct because wheeze is absent.", RESP, "B", "explicit"),
    ("paren-is-best", "Overall, (C) is the best answer.", RESP, "C", "explicit"),
    ("letter-then-text", "The best answer is B: Acute bronchitis", RESP, "B", "explicit"),
    ("lower-case", "the answer is c", RESP, "C", "explicit"),
    ("trailing-explanation",
     "The answer is C. The D-dimer is raised and option A does not explain it.", RESP, "C",
     "explicit"),
    ("answer-option-word", "The answer is option D", RESP, "D", "explicit"),
    ("diagnosis-is", "The most likely diagnosis is B.", RESP, "B", "explicit"),
    ("next-step-is", "The next best step is (C)", RESP, "C", "explicit"),
    ("answer-newlines", "Answer:\n\nB", RESP, "B", "explicit"),
    ("options-discussed-then-answer",
     "Option A: no fever. Option B: fits. Option C: no.\nSo the answer is B.", RESP, "B",
     "explicit"),
    ("final-answer-no-colon", "Final Answer B", RESP, "B", "explicit"),
    ("boxed", r"Therefore $\boxed{C}$", RESP, "C", "explicit"),
    ("emoji-noise", "🤔 Hmm… 🩺 The answer is **C** 🎉✅", RESP, "C", "explicit"),
    ("same-letter-twice", "The answer is B. Again, the answer is B.", RESP, "B", "explicit"),
    ("explicit-beats-option-text", "The answer is D, not pulmonary embolism.", RESP, "D",
     "explicit"),
    ("not-a-but-c", "It is not A but C.", RESP, "C", "explicit"),
    ("negated-then-positive", "Answer: A is not correct. The answer is C.", RESP, "C", "explicit"),
    ("conflict-then-final",
     "At first the answer is A. On reflection, so the answer is C.", RESP, "C", "explicit"),
    ("conflict-then-therefore",
     "I choose B. Hmm, the history fits better: therefore the answer is D.", RESP, "D",
     "explicit"),
    ("five-options-e", "Answer: E", FIVE, "E", "explicit"),
    ("long-then-final", LONG_REASONING + "\nFinal answer: C", RESP, "C", "explicit"),
    # ---- conflicts and negations -> none ---------------------------------------
    ("conflict-no-final", "The answer is A. I also think the answer is C.", RESP, None, "none"),
    ("hedge-or", "The answer is A or B.", RESP, None, "none"),
    ("hedge-final-or", "So the final answer is B or C.", RESP, None, "none"),
    ("negated-answer-is-not", "the answer is not A", RESP, None, "none"),
    ("negated-is-not-correct", "A is not correct", RESP, None, "none"),
    ("negated-it-is-not", "it is not A", RESP, None, "none"),
    ("out-of-range-e", "Answer: E", RESP, None, "none"),
    ("word-not-letter", "the answer is Bacterial", RESP, None, "none"),
    ("b-cell-not-b", "The answer is B-cell lymphoma", RESP, None, "none"),
    ("article-not-a", "A 45-year-old man with cough", RESP, None, "none"),
    ("patient-not-a", "A patient with fever and cough needs more history.", RESP, None, "none"),
    ("i-think-not-i", "I think more data are needed.", {**RESP, "I": "Observe"}, None, "none"),
    ("eg-not-e", "e.g. more tests would help", FIVE, None, "none"),
    ("genus-not-c", "The answer is C. difficile", FIVE, None, "none"),
    ("genus-label-not-e", "E. coli urosepsis", FIVE, None, "none"),
    ("empty", "", RESP, None, "none"),
    ("whitespace", "  \n\t ", RESP, None, "none"),
    ("gibberish", "🙂🙂🙂 ??? ...", RESP, None, "none"),
    # ---- stage 2: lone letter ------------------------------------------------
    ("lone", "B", RESP, "B", "lone_letter"),
    ("lone-dot", "B.", RESP, "B", "lone_letter"),
    ("lone-parens", "(B)", RESP, "B", "lone_letter"),
    ("lone-close-paren", "B)", RESP, "B", "lone_letter"),
    ("lone-brackets", "[B]", RESP, "B", "lone_letter"),
    ("lone-bold", "**B**", RESP, "B", "lone_letter"),
    ("lone-quoted", '"D"', RESP, "D", "lone_letter"),
    ("lone-lower", "c", RESP, "C", "lone_letter"),
    ("lone-leading-newlines", "\n\n   A\n", RESP, "A", "lone_letter"),
    ("lone-first-line", "B\n\nExplanation: option A is wrong because...", RESP, "B",
     "lone_letter"),
    ("label-dot-own-text", "B. Acute bronchitis", RESP, "B", "lone_letter"),
    ("label-paren-text", "C) Start heparin", RESP, "C", "lone_letter"),
    ("label-colon-text", "D: biopsy", RESP, "D", "lone_letter"),
    ("label-dash-text", "  \n A - because of the infiltrate", RESP, "A", "lone_letter"),
    ("lone-last-line", "Wheeze is absent and the D-dimer is normal.\n\n**B**", RESP, "B",
     "lone_letter"),
    ("lone-invalid-letter", "F", RESP, None, "none"),
    ("bare-label-list", "A\nB\nC\nD", RESP, None, "echo"),
    ("hedge-with-negated-second", "The answer is B, and C is incorrect.", RESP, "B", "explicit"),
    ("conflict-final-then-nonfinal", "Final answer: B. Earlier I said the answer is A.", RESP, None,
     "none"),
    # ---- stage 3: fuzzy ---------------------------------------------------------
    ("fuzzy-exact", "Acute bronchitis", RESP, "B", "fuzzy"),
    ("fuzzy-case", "PULMONARY EMBOLISM", RESP, "C", "fuzzy"),
    ("fuzzy-typo", "Acute bronchits", RESP, "B", "fuzzy"),
    ("fuzzy-in-sentence", "I think this is pulmonary embolism given the D-dimer.", RESP, "C",
     "fuzzy"),
    ("fuzzy-answer-is-word", "the answer is Acute Bronchitis", RESP, "B", "fuzzy"),
    ("fuzzy-article", "the answer is a pulmonary embolism", RESP, "C", "fuzzy"),
    ("fuzzy-long", LONG_REASONING + " Most consistent with asthma exacerbation.", RESP, "D",
     "fuzzy"),
    ("nested-longer", "Aspiration pneumonia", NESTED, "B", "fuzzy"),
    ("nested-shorter", "Pneumonia", NESTED, "A", "fuzzy"),
    ("nested-longer-typo", "aspiraton pneumonia", NESTED, "B", "fuzzy"),
    ("nested-both-mentioned", "pneumonia rather than aspiration pneumonia", NESTED, None, "none"),
    ("options-repeated", LISTED, RESP, None, "echo"),
    ("options-repeated-one-line", " ".join(f"{k}) {v}" for k, v in RESP.items()), RESP, None,
     "echo"),
    ("two-options-mentioned", "Either acute bronchitis or pulmonary embolism.", RESP, None, "none"),
    ("fuzzy-near-miss-below-threshold", "bronchiolitis obliterans", RESP, None, "none"),
    ("short-option-skipped", "no", {"A": "no", "B": "yes"}, None, "none"),
    # ---- echoed option lists (issue 9): listing options is not choosing one -> echo ----------------
    ("echo-prefix-colon-newline", "The answer is:\nA. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-prefix-space-glued", "The answer is A. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-prefix-no-space", "The answer isA. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-prefix-newline", "The answer is\nA. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-no-prefix", "A. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-answer-colon-label", "Answer:\nA) yes\nB) no\nC) maybe", YNM, None, "echo"),
    ("echo-paren-labels", "The answer is:\n" + "\n".join(f"({k}) {v}" for k, v in RESP.items()), RESP,
     None, "echo"),
    ("echo-close-paren-labels", "\n".join(f"{k}) {v}" for k, v in RESP.items()), RESP, None, "echo"),
    ("echo-colon-labels", "\n".join(f"{k}: {v}" for k, v in RESP.items()), RESP, None, "echo"),
    ("echo-dash-labels", "\n".join(f"{k} - {v}" for k, v in RESP.items()), RESP, None, "echo"),
    ("echo-bullets", "The answer is:\n" + "\n".join(f"- {k}. {v}" for k, v in RESP.items()), RESP, None,
     "echo"),
    ("echo-bold-labels", "The answer is:\n" + "\n".join(f"**{k}.** {v}" for k, v in RESP.items()), RESP,
     None, "echo"),
    ("echo-bold-entries", "The answer is **A. Yes**\n**B. No**\n**C. Maybe**", YNM, None, "echo"),
    ("echo-lower-case-labels", "The answer is:\na) yes\nb) no\nc) maybe", YNM, None, "echo"),
    ("echo-numbered", "The answer is:\n1. Yes\n2. No\n3. Maybe", YNM, None, "echo"),
    ("echo-numbered-glued", "The answer is 1. Community-acquired pneumonia\n2. Acute bronchitis", RESP,
     None, "echo"),
    ("echo-numbered-paren", "(1) Community-acquired pneumonia\n(2) Acute bronchitis\n(3) Pulmonary embolism",
     RESP, None, "echo"),
    ("echo-letters-one-per-line-after-prefix", "The answer is A\nB\nC\nD", RESP, None, "echo"),
    ("echo-letters-one-per-line-dotted", "The answer is:\nA.\nB.\nC.", YNM, None, "echo"),
    ("echo-inline", "The answer is A. Yes B. No C. Maybe", YNM, None, "echo"),
    ("echo-inline-parens", "Options: (A) yes (B) no (C) maybe", YNM, None, "echo"),
    ("echo-blank-lines-between", "A. Yes\n\nB. No\n\nC. Maybe", YNM, None, "echo"),
    ("echo-partial-two-of-five", "The answer is:\nC. Pulmonary embolism\nD. Asthma exacerbation", FIVE, None,
     "echo"),
    ("echo-partial-cut-by-budget",
     "The answer is A. Community-acquired pneumonia\nB. Acute bronchitis\nC. Pulmo", RESP, None, "echo"),
    ("echo-with-typos", "A. Comunity-acquired pneumonia\nB. Acute bronchits\nC. Pulmonary embolsm", RESP,
     None, "echo"),
    ("echo-option-texts-only", "The answer is:\nYes\nNo\nMaybe", YNM, None, "echo"),
    ("echo-prefix-then-texts", "The answer is yes\nno\nmaybe", YNM, None, "echo"),
    ("echo-header-line", "Options:\nA. Yes\nB. No\nC. Maybe", YNM, None, "echo"),
    ("echo-shuffled", "B. No\nA. Yes\nC. Maybe", YNM, None, "echo"),
    ("echo-markdown-heading", "### Options\n**A)** Yes\n**B)** No", YNM, None, "echo"),
    ("echo-long-options", "The answer is:\n" + "\n".join(f"{k}. {v}" for k, v in STROKE.items()), STROKE,
     None, "echo"),
    # ---- an echo followed (or preceded) by a real statement: the statement counts -------------------
    ("echo-then-answer-is", LISTED + "\nThe answer is C.", RESP, "C", "explicit"),
    ("echo-then-answer-colon", "A. Yes\nB. No\n\nAnswer: B", YNM, "B", "explicit"),
    ("prefix-echo-then-answer", "The answer is:\nA. Yes\nB. No\nC. Maybe\nThe answer is B", YNM, "B",
     "explicit"),
    ("glued-echo-then-answer", "The answer is A. Yes\nB. No\nC. Maybe\n\nSo the answer is C.", YNM, "C",
     "explicit"),
    ("echo-then-answer-with-own-text", "A. Yes\nB. No\nC. Maybe\nThe answer is C. Maybe", YNM, "C",
     "explicit"),
    ("echo-then-final-answer-bold", LISTED + "\n\n**Final answer: D**", RESP, "D", "explicit"),
    ("echo-then-option-is-correct", LISTED + "\nOption B is correct.", RESP, "B", "explicit"),
    ("numbered-echo-then-answer", "1. Yes\n2. No\n3. Maybe\nAnswer: C", YNM, "C", "explicit"),
    ("statement-before-listing", "The answer is B.\n" + LISTED, RESP, "B", "explicit"),
    ("discussion-lines-then-final",
     "A. Pneumonia is unlikely without fever.\nB. Bronchitis fits the cough.\nC. PE is unlikely.\n"
     "The answer is B.", RESP, "B", "explicit"),
    ("numbered-reasoning-then-fuzzy",
     "1. The cough is productive.\n2. There is no fever.\nMost consistent with acute bronchitis.", RESP, "B",
     "fuzzy"),
    # ---- one option with its own text is an answer, not an echo ----------------------------------------
    ("single-option-with-text", "The answer is B. Acute bronchitis", RESP, "B", "explicit"),
    ("single-option-on-next-line", "The answer is:\nB. Acute bronchitis", RESP, "B", "explicit"),
    ("single-yes-no-option", "The answer is B. No", YNM, "B", "explicit"),
    ("single-option-text-on-next-line", "The answer is:\nAcute bronchitis", RESP, "B", "fuzzy"),
    # ---- letter + text of a different option -> conflict ---------------------------------------------------
    ("conflict-label-at-start", " A. Cerebral infarction.", STROKE, None, "conflict"),
    ("conflict-after-prefix", "The answer is A. Cerebral infarction.", STROKE, None, "conflict"),
    ("conflict-answer-colon-text", "The answer is A: Cerebral infarction", STROKE, None, "conflict"),
    ("conflict-final-statement",
     "The CT shows no blood. So the final answer is A: Cerebral infarction.", STROKE, None, "conflict"),
    ("conflict-final-answer-parens", "Final answer: (A) Cerebral infarction", STROKE, None, "conflict"),
    ("conflict-bold-label-and-text", "**A. Cerebral infarction**", STROKE, None, "conflict"),
    ("conflict-bold-after-prefix", "The answer is **A. Cerebral infarction**", STROKE, None, "conflict"),
    ("conflict-bold-label-only", "The answer is **A.** Cerebral infarction", STROKE, None, "conflict"),
    ("conflict-paren-label", "(A) Cerebral infarction", STROKE, None, "conflict"),
    ("conflict-text-with-typo", "The answer is A. Cerebal infarktion", STROKE, None, "conflict"),
    ("conflict-text-then-reason", "The answer is A: Cerebral infarction, given the normal CT.", STROKE, None,
     "conflict"),
    ("conflict-text-then-because", "The answer is A - Cerebral infarction because of the deficit.", STROKE,
     None, "conflict"),
    ("conflict-short-option", "The answer is A. No", YNM, None, "conflict"),
    ("conflict-nested-longer-text", "A. Aspiration pneumonia", NESTED, None, "conflict"),
    ("conflict-after-reasoning", "No blood on CT and deficits for 3 hours.\nThe answer is D: Cerebral infarction",
     STROKE, None, "conflict"),
    # ---- letter + own text, a paraphrase, or an explanation: the letter is kept ---------------------------
    ("own-text-keeps-letter", "The answer is B. Cerebral infarction.", STROKE, "B", "explicit"),
    ("own-text-typo-keeps-letter", "The answer is B: Cerebal infarction", STROKE, "B", "explicit"),
    ("own-text-bold-keeps-letter", "**B. Cerebral infarction**", STROKE, "B", "lone_letter"),
    ("paraphrase-keeps-letter", "The answer is B. An ischemic stroke of the MCA territory.", STROKE, "B",
     "explicit"),
    ("explanation-naming-other-option-keeps-letter",
     "The answer is B. Intracerebral hemorrhage is unlikely with a normal CT.", STROKE, "B", "explicit"),
    ("negated-other-option-keeps-letter", "The answer is B, not intracerebral hemorrhage.", STROKE, "B",
     "explicit"),
    ("rather-than-keeps-letter", "The answer is B rather than subarachnoid hemorrhage.", STROKE, "B",
     "explicit"),
    ("text-on-next-line-not-read", "Answer: B\nIntracerebral hemorrhage was excluded by CT.", STROKE, "B",
     "explicit"),
    ("reasoning-labels-then-final",
     "A. Intracerebral hemorrhage: no blood on CT.\nC. Subarachnoid hemorrhage: no thunderclap.\n"
     "Therefore the answer is B.", STROKE, "B", "explicit"),
    ("nested-own-longer-text", "B. Aspiration pneumonia", NESTED, "B", "lone_letter"),
    ("nested-own-shorter-text", "The answer is A. Pneumonia", NESTED, "A", "explicit"),
    ("answer-over-other-option-is-no-list", "I'd choose B. Acute bronchitis over C. Pulmonary embolism", RESP, "B",
     "explicit"),
    ("own-text-with-aside-keeps-letter", "The answer is B. Acute bronchitis (viral)", RESP, "B", "explicit"),
    ("conflict-text-in-parens", "The answer is A (Acute bronchitis)", RESP, None, "conflict"),
    # ---- issue 19: another option's text at a word boundary, whatever follows -> conflict -------------------
    ("conflict-other-text-then-is", "The answer is A. Tuberculosis is a serious infectious disease", TB, None,
     "conflict"),
    ("conflict-other-text-then-would-be", "The answer is A. Tuberculosis would be treated first.", TB, None,
     "conflict"),
    ("conflict-other-text-then-should", "Answer: A) Tuberculosis should be considered in this patient", TB, None,
     "conflict"),
    ("conflict-other-text-then-noun", "A. Tuberculosis infection of the upper lobe", TB, None, "conflict"),
    ("conflict-other-text-then-was", " A. Tuberculosis was the cause of the cavity", TB, None, "conflict"),
    ("conflict-other-text-then-and", "The answer is C: Sarcoidosis and its granulomas explain it", TB, None,
     "conflict"),
    ("conflict-other-text-lower-case", "the answer is a. tuberculosis is likely", TB, None, "conflict"),
    ("conflict-other-text-bold-then-words", "The answer is **A. Tuberculosis** is the most likely", TB, None,
     "conflict"),
    ("conflict-other-text-typo-then-words", "The answer is A. Tuberculossis is the likely cause", TB, None,
     "conflict"),
    ("conflict-two-word-text-then-words", "The answer is D. Lung adenocarcinoma is the most likely diagnosis",
     TB, None, "conflict"),
    ("conflict-final-answer-other-text", "Final answer: B. Lymphoma of the mediastinum", TB, None, "conflict"),
    ("conflict-longest-option-first", "The answer is A. Aspirin and clopidogrel are started", ASPIRIN, None,
     "conflict"),
    ("conflict-longest-option-first-shorter-letter", "The answer is D. Heparin infusion is started", ASPIRIN,
     None, "conflict"),
    ("conflict-one-word-other-then-words", "The answer is A. Observation in hospital overnight", ASPIRIN, None,
     "conflict"),
    ("conflict-yes-no-then-words", "The answer is A. No, the study does not show it", YNM, None, "conflict"),
    # ---- ... and what keeps the letter ------------------------------------------------------------------
    ("own-text-then-words-keeps-letter", "The answer is D. Tuberculosis is a serious infectious disease", TB,
     "D", "explicit"),
    ("own-longer-text-keeps-letter", "The answer is B. Aspirin and clopidogrel are started", ASPIRIN, "B",
     "explicit"),
    ("own-longer-text-lone-keeps-letter", "C. Heparin infusion at 18 units/kg", ASPIRIN, "C", "lone_letter"),
    ("own-text-shortened-keeps-letter", "The answer is B. Aspirin is started today", ASPIRIN, "B", "explicit"),
    ("own-text-shortened-keeps-letter-2", "The answer is C. Heparin, then warfarin", ASPIRIN, "C", "explicit"),
    ("other-text-argued-against-keeps-letter", "The answer is D. Lung adenocarcinoma is unlikely in a "
     "non-smoker", TB, "D", "explicit"),
    ("other-text-ruled-out-keeps-letter", "The answer is D. Lymphoma can be ruled out by the biopsy", TB, "D",
     "explicit"),
    ("other-text-not-keeps-letter", "The answer is D. Sarcoidosis does not cause caseation", TB, "D",
     "explicit"),
    ("paraphrase-first-keeps-letter", "The answer is D. The cavity and night sweats point to tuberculosis", TB,
     "D", "explicit"),
    ("own-near-identical-within-margin-keeps-letter", "The answer is A. Vitamin B deficiency", B_VITAMINS, "A",
     "explicit"),
    ("repeated-own-letter-keeps-letter", "The answer is A. A.", TB, "A", "explicit"),
    # a near copy of another option's text (one word changed), far from the letter's own: conflict
    ("conflict-near-copy-of-other-text", "Answer: C. Give intravenous epinephrine", ANAPHYLAXIS, None, "conflict"),
    ("near-copy-of-own-text-keeps-letter", "Answer: D. Give intravenous epinephrine", ANAPHYLAXIS, "D", "explicit"),
    ("paraphrase-between-options-keeps-letter", "Answer: B. Give intravenous steroids", ANAPHYLAXIS, "B",
     "explicit"),
    # statements inside an example or a condition imitating the instructions are no choice
    ("hypothetical-if-you-choose", "If you choose option A and A reads 'Croup', reply: 'The answer is A: Croup.'",
     RESP, None, "none"),
    ("hypothetical-for-example-then-choice", "For example, the answer is B.\nI choose D.", RESP, "D", "explicit"),
    ("conditional-in-reasoning-still-counts", "Given the wheeze, the answer is D.", RESP, "D", "explicit"),
    # fuzzy quotes must cover whole words
    ("fuzzy-inside-a-word-is-no-quote", "Which of the following is a vitamin deficiency?", VITAMINS, None, "none"),
    ("fuzzy-inside-a-longer-word-is-no-quote", "The smallest bone in the body is the",
     {"A": "Malleus", "B": "Incus", "C": "Patella", "D": "Stapes"}, None, "none"),
    ("fuzzy-typo-still-a-quote", "most likely acute bronchits here", RESP, "B", "fuzzy"),
    # ---- issue 19: label lists whose "texts" are labels -> echo --------------------------------------------
    ("echo-label-pairs", "The answer is:\nA. A.\nB. B.\nC. D.", YNM, None, "echo"),
    ("echo-label-pairs-after-colon", "The answer is:\nA. A.\nB. B.\nC. C.\nD. D.", RESP, None, "echo"),
    ("echo-label-pairs-glued", "The answer is A. A.\nB. B.\nC. D.", YNM, None, "echo"),
    ("echo-label-pairs-inline", "The answer is: A. A. B. B. C. C.", RESP, None, "echo"),
    ("echo-label-pairs-option-word", "The answer is:\nA. Option A\nB. Option B\nC. Option C", RESP, None,
     "echo"),
    ("echo-label-pairs-parens", "The answer is:\n(A) A\n(B) B\n(C) C", RESP, None, "echo"),
    ("echo-label-pairs-bold", "The answer is:\n**A.** A.\n**B.** B.", RESP, None, "echo"),
    # consecutive option labels opening three or more lines: the list again, whatever the texts
    ("echo-labels-with-changed-texts", "Answer:\nA. The femur\nB. The tibia\nC. The humerus\nD. The fibula",
     {"A": "Tibia", "B": "Femur", "C": "Humerus", "D": "Fibula"}, None, "echo"),
    ("echo-labels-first-text-shortened", "Answer:\nA. Community pneumonia\nB. Acute bronchitis\nC. Pulmonary "
     "embolism\nD. Asthma exacerbation", RESP, None, "echo"),
    ("per-option-discussion-is-no-statement", "Answer:\nA. unlikely, no fever\nB. fits the cough\nC. unlikely",
     RESP, None, "echo"),
    ("two-labelled-lines-are-no-sequence", "Answer:\nA. Community-acquired pneumonia\nB. less likely", RESP, "A",
     "explicit"),
    ("sequence-then-final-statement", "A. no fever\nB. fits\nC. unlikely\nD. no wheeze\nFinal answer: B", RESP,
     "B", "explicit"),
    ("echo-placeholder-list", "Answer:\nA. <text of option A>\n<text of option B>\n<text of option C>", RESP, None,
     "echo"),
    ("echo-placeholder-pairs", "Answer:\nA. <text of option A>\nB. <text of option B>", RESP, None, "echo"),
    ("echo-label-pairs-then-statement", "The answer is:\nA. A.\nB. B.\nC. D.\nThe answer is B.", YNM, "B",
     "explicit"),
    # option texts that hold a label-like word ("Vitamin D. deficiency") are one text, not two options
    ("echo-option-text-with-label-like-word", "The answer is:\n" + "\n".join(f"{k}. {v}" for k, v in
                                                                                LABEL_LIKE.items()),
     LABEL_LIKE, None, "echo"),
    ("echo-inline-option-text-with-label-like-word", " ".join(f"{k}. {v}" for k, v in LABEL_LIKE.items()),
     LABEL_LIKE, None, "echo"),
    ("label-like-word-own-text", "A. Vitamin D. deficiency", LABEL_LIKE, "A", "lone_letter"),
    ("conflict-label-like-word", "C. Vitamin D. deficiency", LABEL_LIKE, None, "conflict"),
    ("conflict-label-like-word-after-prefix", "The answer is C. Vitamin D. deficiency", LABEL_LIKE, None,
     "conflict"),
    ("conflict-between-near-identical-options", "The answer is C. Vitamin D", VITAMINS, None, "conflict"),
    ("own-near-identical-option-keeps-letter", "The answer is C. Vitamin C", VITAMINS, "C", "explicit"),
    ("echo-near-identical-options", "The answer is:\n" + "\n".join(f"{k}. {v}" for k, v in VITAMINS.items()),
     VITAMINS, None, "echo"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "options", "letter", "method"),
    [pytest.param(*row[1:], id=row[0]) for row in CASES],
)
def test_extract_choice_table(
    text: str, options: dict[str, str], letter: str | None, method: str
) -> None:
    result = extract_choice(text, options)
    assert (result.letter, result.method) == (letter, method), result.detail
    assert result.detail


@pytest.mark.parametrize(
    ("text", "options", "detail"),
    [
        ("", RESP, "empty output"),
        (
            "The answer is A. I also think the answer is C.",
            RESP,
            "conflicting explicit answers: A, C",
        ),
        (LISTED, RESP, "output lists options A, B, C, D without a statement choosing one"),
        ("The answer is A. Acute bronchitis", RESP,
         'letter A stated with the text of option B ("Acute bronchitis" matches "Acute bronchitis", '
         'not "Community-acquired pneumonia")'),
        (LISTED + "\nThe answer is C.", RESP,
         'matched "answer is C" (after a listing of options A, B, C, D)'),
        ("Acute bronchitis", RESP, 'fuzzy 100.0 on option B ("Acute bronchitis")'),
        ("The answer is B", RESP, 'matched "answer is B"'),
        ("nothing useful", RESP, "no answer found"),
    ],
)
def test_detail_messages(text: str, options: dict[str, str], detail: str) -> None:
    assert extract_choice(text, options).detail == detail


LONGHEALTH_STYLE = ("Reply with the letter and the text of that option. For example, if you choose option B and B "
                    "reads 'Iron deficiency anaemia', reply: 'The correct answer is B: Iron deficiency anaemia.'")
PLACEHOLDER_STYLE = "Give the letter followed by the full text of that option, for example: B. <text of option B>"


@pytest.mark.parametrize(("text", "instructions", "letter", "method"), [
    ("The correct answer is B: Iron deficiency anaemia.", LONGHEALTH_STYLE, None, "echo"),
    ("The correct answer is D: Iron deficiency anaemia", LONGHEALTH_STYLE, None, "echo"),  # another letter, same copy
    ("B: Iron deficiency anaemia", LONGHEALTH_STYLE, None, "echo"),
    ("The correct answer is B: Acute bronchitis.", LONGHEALTH_STYLE, "B", "explicit"),  # its own text: an answer
    ("The correct answer is B: Pulmonary embolism.", LONGHEALTH_STYLE, None, "conflict"),
    ("The correct answer is B: Iron deficiency", LONGHEALTH_STYLE, None, "echo"),  # the example's text, cut short
    ("The correct answer is B: Iron supplements", LONGHEALTH_STYLE, "B", "explicit"),  # not the example's text
    ("Answer: B. <text of option B>", PLACEHOLDER_STYLE, None, "echo"),
    ("Answer: C. <text of option C>", PLACEHOLDER_STYLE, "C", "explicit"),  # adapted to its own letter
    ("Answer: B. <text of option B>garbage and more", PLACEHOLDER_STYLE, None, "echo"),  # a whole example, then junk
    ("The correct answer is B: Iron deficiency anaemia is the answer", LONGHEALTH_STYLE, None, "echo"),
    ("The answer is B. The single best answer.", "Which option is the single best answer?", "B", "explicit"),
    ("The correct answer is B: Iron deficiency anaemia.", "", "B", "explicit"),  # without instructions: no example
])
def test_a_copy_of_the_prompts_format_example_is_no_answer(text: str, instructions: str, letter: str | None,
                                                           method: str) -> None:
    """The text after a letter that is the instructions' example answer (after a capital label there), naming no
    option, is a copy of the format example (issue 19): method ``echo``; the instructions' other words do not
    count."""
    found = extract_choice(text, RESP, instructions=instructions)
    assert (found.letter, found.method) == (letter, method), found.detail


def test_out_of_range_letter_is_reported() -> None:
    result = extract_choice("Answer: E", RESP)
    assert result.letter is None
    assert result.detail.startswith("no answer found") and "E" in result.detail


def test_thresholds_are_parameters() -> None:
    assert extract_choice("Acute bronchits", RESP, fuzzy_threshold=99.0).letter is None
    both = "acute bronchitis; pulmonary embolis"
    assert extract_choice(both, RESP).letter is None
    assert extract_choice(both, RESP, fuzzy_margin=1.0).letter == "B"


@pytest.mark.parametrize(
    "text",
    [
        "(" * 20000,
        "**" * 20000,
        "answer: " + "(* " * 10000,
        "\n" * 20000 + "x",
        "A. " * 10000,
        "not " * 10000 + "A but B",
        "word " * 20000,
        "A. Acute bronchitis\n" * 5000,  # an echo, repeated: many list lines
        "\nA" * 20000,
        "1. " * 10000,
        "(A) " * 10000 + "Acute bronchitis",
        "The answer is " * 5000 + "A. Acute bronchitis",
        "A. " + "Acute bronchitis " * 5000,
        "The answer is A: " + "x" * 50000,
        "A. A.\n" * 5000,  # extraction v3: label lists, placeholders, label sequences, examples, word runs
        "<text of option A>\n" * 5000,
        "A. x\nB. y\nC. z\n" * 3000,
        "If you choose option A, reply: " * 2000,
        "A. Acute bronchitis is " + "very " * 10000 + "likely",
    ],
)
def test_pathological_inputs_return_a_valid_result(text: str) -> None:
    """Unbounded regex repetition once made "((((..." take ~20 s. Speed is measured (as a ratio against
    ordinary outputs) by tools/bench_extraction.py, not asserted here; this pins correctness on them."""
    found = extract_choice(text, RESP)
    assert found.letter is None or found.letter in RESP
    assert (found.letter is None) == (found.method in NO_ANSWER_METHODS)


def test_result_is_frozen() -> None:
    result = extract_choice("B", RESP)
    assert isinstance(result, Extraction)
    with pytest.raises(AttributeError):
        result.letter = "C"  # type: ignore[misc]


# ---- Hypothesis properties --------------------------------------------------

LETTERS = "ABCDE"
option_dicts = st.lists(st.sampled_from(LETTERS), min_size=2, max_size=5, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: st.text(max_size=40) for k in sorted(keys)})
)
# Mix free text with fragments that exercise every regex branch.
# fmt: off
TOKENS = [
    "the answer is ", "Answer: ", "not ", " or ", "final answer", " is correct", "I choose ",
    "**", "(", ")", "[", "]", ".", ":", " - ", "\n", r"\boxed{", "}", "a ", "I ", "e.g. ",
    *LETTERS, *LETTERS.lower(), "pneumonia", "Acute bronchitis", "🎉",
]
# fmt: on
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=30).map("".join),
)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(text=texts, options=option_dicts)
def test_never_raises_and_letter_is_valid(text: str, options: dict[str, str]) -> None:
    result = extract_choice(text, options)
    assert result.letter is None or result.letter in options
    assert result.method in {"explicit", "lone_letter", "fuzzy", "none", "echo", "conflict"}
    assert result.detail


@FAST
@given(data=st.data(), options=option_dicts)
def test_stated_answer_is_explicit(data: st.DataObject, options: dict[str, str]) -> None:
    letter = data.draw(st.sampled_from(sorted(options)))
    result = extract_choice(f"The answer is {letter}.", options)
    assert (result.letter, result.method) == (letter, "explicit")


@FAST
@given(data=st.data(), options=option_dicts)
def test_lone_letter_is_returned(data: st.DataObject, options: dict[str, str]) -> None:
    letter = data.draw(st.sampled_from(sorted(options)))
    wrap = data.draw(st.sampled_from(["{}", "{}.", "({})", "{})", "[{}]", "**{}**", " \n{}\n"]))
    result = extract_choice(wrap.format(letter), options)
    assert (result.letter, result.method) == (letter, "lone_letter")


@FAST
@given(text=texts, options=option_dicts)
def test_no_answer_method_iff_no_letter(text: str, options: dict[str, str]) -> None:
    result = extract_choice(text, options)
    assert (result.method in NO_ANSWER_METHODS) == (result.letter is None)


# ---- echoes and letter-text conflicts (issue 9) -------------------------------------------------------------

# Option texts as exams write them: 1-4 words. Words that the explicit patterns, the explanation cues or the
# genus guard react to are left out, so that an option text can never itself state an answer.
_CUE_WORDS = {"answer", "answers", "option", "options", "choice", "choices", "letter", "final", "diagnosis",
              "treatment", "management", "step", "cause", "explanation", "mechanism", "intervention", "choose",
              "pick", "select", "not", "but", "correct", "right", "best", "true", "boxed", "because", "since",
              "given", "due", "which", "rather", "than", "instead", "over", "versus", "unlike", "excluding",
              "coli", "difficile", "diff", "aureus", "pylori", "would", "will", "should", "must", "was",
              "therefore", "thus", "hence", "overall", "summary", "conclusion", "ultimately", "then"}
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10).filter(
    lambda w: w not in _CUE_WORDS)
label_like = st.sampled_from([f"{c}." for c in "ABCDEKTX"])  # "Vitamin D. deficiency", "type B. cells"


def _option_text(ws: list[str], cap: bool, inner: str | None) -> str:
    if inner is not None and len(ws) >= 2:  # a label-like word inside the text, never first
        ws = [ws[0], inner, *ws[1:]]
    text = " ".join(ws)
    return text[0].upper() + text[1:] if cap else text


option_texts = st.builds(_option_text, st.lists(words, min_size=1, max_size=4), st.booleans(),
                         st.one_of(st.none(), st.none(), label_like))
realistic_options = st.integers(min_value=2, max_value=5).flatmap(
    lambda n: st.lists(option_texts, min_size=n, max_size=n).map(lambda ts: dict(zip(LETTERS, ts))))

# How an option list is echoed: (entry format, entry separators). {L}: letter, {l}: lower-case letter,
# {n}: number, {t}: option text.
LIST_FORMATS = [
    ("{L}. {t}", ["\n", "\n\n", " ", "  "]), ("{L}) {t}", ["\n", " "]), ("({L}) {t}", ["\n", " "]),
    ("{L}: {t}", ["\n"]), ("[{L}] {t}", ["\n"]), ("{L} - {t}", ["\n"]), ("- {L}. {t}", ["\n"]),
    ("**{L}.** {t}", ["\n", " "]), ("**{L}. {t}**", ["\n"]), ("{l}) {t}", ["\n"]), ("{n}. {t}", ["\n"]),
    ("({n}) {t}", ["\n"]), ("{L}", ["\n"]), ("{L}.", ["\n"]), ("{t}", ["\n"]), ("* {t}", ["\n"]),
]
PREFIXES = ["The answer is", "Answer", "The correct answer is", ""]
JOINS = [":", "", "\n", ": ", ":\n", " ", "\n\n"]


def _listing(data: st.DataObject, options: dict[str, str], *, full: bool) -> str:
    fmt, seps = data.draw(st.sampled_from(LIST_FORMATS), label="format")
    letters = sorted(options)
    if not full:  # a partial echo: two or more of the options, in order
        letters = data.draw(st.lists(st.sampled_from(letters), min_size=2, unique=True).map(sorted))
    sep = data.draw(st.sampled_from(seps), label="separator")
    return sep.join(fmt.format(L=k, l=k.lower(), n=LETTERS.index(k) + 1, t=options[k]) for k in letters)


@FAST
@given(data=st.data(), options=realistic_options)
def test_echoed_option_list_after_the_answer_prefix_never_yields_a_letter(
        data: st.DataObject, options: dict[str, str]) -> None:
    prefix, join = data.draw(st.sampled_from(PREFIXES)), data.draw(st.sampled_from(JOINS))
    text = prefix + join + _listing(data, options, full=data.draw(st.booleans()))
    result = extract_choice(text, options)
    assert result.letter is None, (text, result)
    assert result.method in NO_ANSWER_METHODS


@FAST
@given(data=st.data(), options=realistic_options)
def test_a_statement_after_an_echo_still_counts(data: st.DataObject, options: dict[str, str]) -> None:
    letter = data.draw(st.sampled_from(sorted(options)))
    statement = data.draw(st.sampled_from(["The answer is {}.", "Answer: {}", "So the final answer is ({})",
                                           "**Final answer: {}**", "Option {} is correct."]))
    text = "The answer is:\n" + _listing(data, options, full=True) + "\n\n" + statement.format(letter)
    result = extract_choice(text, options)
    assert (result.letter, result.method) == (letter, "explicit"), (text, result)


ANSWER_WITH_TEXT = ["{L}. {t}", " {L}. {t}.", "The answer is {L}. {t}", "The answer is {L}: {t}",
                    "The answer is **{L}. {t}**", "**{L}. {t}**", "Final answer: ({L}) {t}", "({L}) {t}",
                    "The correct answer is {L} - {t}", "Answer: {L}) {t}, given the findings."]


@FAST
@given(data=st.data(), options=realistic_options)
def test_letter_with_its_own_text_gives_the_letter(data: st.DataObject, options: dict[str, str]) -> None:
    letter = data.draw(st.sampled_from(sorted(options)))
    text = data.draw(st.sampled_from(ANSWER_WITH_TEXT)).format(L=letter, t=options[letter])
    result = extract_choice(text, options)
    assert result.letter == letter, (text, result)


@FAST
@given(data=st.data(), options=realistic_options)
def test_letter_with_another_options_text_is_a_conflict(data: st.DataObject, options: dict[str, str]) -> None:
    stated, other = data.draw(st.lists(st.sampled_from(sorted(options)), min_size=2, max_size=2, unique=True))
    assume(fuzz.ratio(options[stated].casefold(), options[other].casefold()) < 80)
    # the stated option's own text does not begin with the other's ("B. Aspirin" for B "Aspirin and ...")
    assume(not _begins_with(_ws(options[stated]), _ws(options[other])))
    text = data.draw(st.sampled_from(ANSWER_WITH_TEXT)).format(L=stated, t=options[other])
    result = extract_choice(text, options)
    assert (result.letter, result.method) == (None, "conflict"), (text, result)
    assert result.detail.startswith(f"letter {stated} stated with the text of option ")


# ---- issue 19: a letter, then an option's text at a word boundary, whatever follows ---------------------------

# Option texts built from words that are far from each other (rapidfuzz ratio < 55), so that texts overlap only
# where one begins another ("aspirin" / "aspirin clopidogrel"), never by a near-typo.
POOL = ["aspirin", "clopidogrel", "tuberculosis", "sarcoidosis", "lymphoma", "biopsy", "observation", "surgery",
        "ultrasound", "dialysis", "amiodarone", "colonoscopy", "insulin", "thrombolysis"]
# Words that may follow an option's text: the pool itself (so that the words go on into a longer option's text)
# and ordinary words that neither state nor negate anything.
FOLLOW = POOL + ["is", "would", "be", "should", "was", "the", "first", "line", "for", "this", "patient", "today",
                 "infection", "of", "lung", "started", "and", "in", "treatment", "with"]
LETTER_FORMS = ["{L}. {t}", "The answer is {L}. {t}", "The answer is {L}: {t}", "Answer: ({L}) {t}",
                "The correct answer is {L} - {t}", "**{L}.** {t}", "Final answer: {L}) {t}"]
pool_texts = st.lists(st.sampled_from(POOL), min_size=1, max_size=3).map(" ".join)
overlapping_options = st.integers(min_value=2, max_value=5).flatmap(
    lambda n: st.lists(pool_texts, min_size=n, max_size=n, unique=True).map(lambda ts: dict(zip(LETTERS, ts))))


def _ws(text: str) -> list[str]:
    return text.casefold().replace("-", " ").split()


def _begins_with(words: list[str], prefix: list[str]) -> bool:
    return words[: len(prefix)] == prefix


def test_the_pool_words_are_far_apart() -> None:
    assert all(fuzz.ratio(a, b) < 55 for i, a in enumerate(POOL) for b in POOL[i + 1:])


def _expected_reading(stated: str, line: list[str], options: dict[str, str]) -> str | None:
    """The rule, read off exact word prefixes: the longest option text the words begin with is the named one;
    the stated letter stands if that is its own option, or its own text begins with the named one's; else a
    conflict (None)."""
    named = max((k for k, v in options.items() if _begins_with(line, _ws(v))), key=lambda k: len(_ws(options[k])))
    if named == stated or _begins_with(_ws(options[stated]), _ws(options[named])):
        return stated
    return None


@FAST
@given(data=st.data(), options=overlapping_options)
def test_letter_then_an_options_text_then_any_words(data: st.DataObject, options: dict[str, str]) -> None:
    """"X. <text of option Y> <any words>": the letter X when Y is X, or when X's text begins with Y's; a
    conflict otherwise; where the words go on into a longer option's text Z, Z is the named one (longest
    first)."""
    stated = data.draw(st.sampled_from(sorted(options)), label="stated")
    named = data.draw(st.sampled_from(sorted(options)), label="text of")
    follow = data.draw(st.lists(st.sampled_from(FOLLOW), max_size=5), label="then")
    line = _ws(options[named]) + follow
    # No option is a near-typo of the line's beginning unless it is exactly there (that is the fuzzy stage's
    # business, pinned by the table): the reading is then decided by exact words alone.
    assume(all(_begins_with(line, _ws(v)) or all(fuzz.ratio(v, " ".join(line[:k])) < 80
                                                   for k in range(1, len(line) + 1)) for v in options.values()))
    words = " ".join([options[named].capitalize() if data.draw(st.booleans()) else options[named], *follow])
    end = data.draw(st.sampled_from(["", ".", " ", ", as expected."]))
    text = data.draw(st.sampled_from(LETTER_FORMS)).format(L=stated, t=words) + end
    result = extract_choice(text, options)
    expected = _expected_reading(stated, line, options)
    if expected is None:
        assert (result.letter, result.method) == (None, "conflict"), (text, result)
    else:
        assert result.letter == stated, (text, result)
    assert result.detail


@FAST
@given(data=st.data(), options=overlapping_options)
def test_another_options_text_argued_against_keeps_the_letter(data: st.DataObject, options: dict[str, str]) -> None:
    """"X. <text of option Y> is unlikely ...": an explanation of X, never a conflict."""
    stated, named = (data.draw(st.sampled_from(sorted(options))) for _ in range(2))
    against = data.draw(st.sampled_from(["is unlikely", "is not the cause", "was ruled out", "can be excluded",
                                         "is less likely here", "does not fit", "isn't supported"]))
    text = data.draw(st.sampled_from(LETTER_FORMS)).format(L=stated, t=f"{options[named]} {against}")
    line = _ws(f"{options[named]} {against}")
    # no longer option's text begins the words, exactly or nearly (then that option is the one named)
    assume(all(v == options[named] or all(fuzz.ratio(v, " ".join(line[:k])) < 80 for k in range(1, len(line) + 1))
               for v in options.values() if len(_ws(v)) > len(_ws(options[named]))))
    result = extract_choice(text, options)
    assert result.letter == stated, (text, result)


# Garbled echoes: a list whose "texts" are labels ("A. A.", "B. B.", "C. D.", "A. Option A").
PAIR_FORMS = ["{L}. {M}.", "{L}. {M}", "({L}) {M}", "{L}) {M})", "**{L}.** {M}.", "{L}. Option {M}", "{L}: ({M})"]


@FAST
@given(data=st.data(), options=realistic_options)
def test_a_list_of_labels_for_texts_is_an_echo(data: st.DataObject, options: dict[str, str]) -> None:
    letters = data.draw(st.lists(st.sampled_from(sorted(options)), min_size=2, unique=True).map(sorted))
    fmt = data.draw(st.sampled_from(PAIR_FORMS))
    texts = [fmt.format(L=k, M=data.draw(st.sampled_from(LETTERS[: len(options)]))) for k in letters]
    sep = data.draw(st.sampled_from(["\n", "\n\n"] + ([" "] if "Option" not in fmt else [])))
    text = data.draw(st.sampled_from(PREFIXES)) + data.draw(st.sampled_from([":\n", "\n", ": ", " "])) + sep.join(texts)
    result = extract_choice(text, options)
    assert (result.letter, result.method) == (None, "echo"), (text, result)


@FAST
@given(data=st.data(), options=overlapping_options)
def test_an_options_text_inside_a_longer_word_is_no_quote(data: st.DataObject, options: dict[str, str]) -> None:
    """"a vitamin deficiency" does not quote "Vitamin D" (issue 19): an option's text glued to the start of a
    longer word is not read by the fuzzy stage; the same text as whole words is."""
    letter = data.draw(st.sampled_from(sorted(options)))
    text = options[letter]
    # no option's text holds another's (nested texts: the table), nor shares a word with it
    assume(all(set(a.split()).isdisjoint(b.split()) for a in options.values() for b in options.values() if a != b))
    # glued letters as long as half the text at least: far beyond a typo (ratio <= 80), whatever its length
    glued = data.draw(st.text(alphabet="xqz", min_size=max(6, len(text) // 2 + 1), max_size=max(12, len(text))))
    assert extract_choice(f"we discussed {text}{glued} today", options).letter is None
    assert extract_choice(f"we discussed {text} today", options).letter == letter

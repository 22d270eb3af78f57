"""The videomini_mc task's functions (lmms-eval imports this file by path, in its own environment)."""

POST_PROMPT = "Answer with the option's letter from the given choices directly."


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    options = "\n".join(doc["options"])
    return f"Question: {doc['question']}\nOptions:\n{options}\n{POST_PROMPT}"


def process_results(doc, results):
    return {"accuracy": float(results[0].strip()[:1].upper() == doc["answer"])}

import pickle


def load(blob):
    return pickle.loads(blob)  # blob comes from the request body
